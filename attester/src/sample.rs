//! The `sample` attester: evidence with no hardware behind it, for tests against a KBS
//! whose policy accepts it. Only ever used when configured explicitly (see [`crate::probe`]).

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::abi;
use crate::error::Error;

/// `{"svn":"1","report_data":"<base64 std of the report data, not padded>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleEvidence {
    /// Always `"1"`.
    pub svn: String,
    /// Standard base64 of the report data as given.
    pub report_data: String,
}

impl SampleEvidence {
    /// Evidence for `report_data` (as given, not padded).
    pub fn new(report_data: &[u8]) -> Self {
        Self {
            svn: abi::SAMPLE_SVN.to_owned(),
            report_data: base64::engine::general_purpose::STANDARD.encode(report_data),
        }
    }

    /// The JSON text sent as `primary_evidence`.
    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }
}
