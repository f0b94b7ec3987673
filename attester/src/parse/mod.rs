//! Parsers for what this crate produces — SEV-SNP reports, TDX TDREPORTs and TD quotes —
//! and [`describe_file`], which recognises any of them (raw, hex, base64, or wrapped in our
//! evidence JSON) and pretty-prints it for a person debugging a guest.

pub mod snp;
pub mod tdx;

use base64::Engine;

use crate::abi;
use crate::error::Error;
use crate::sample::SampleEvidence;
use crate::tdx::TdxEvidence;
use snp::SnpReport;
use tdx::{TdQuote, TdReport};

/// What [`detect`] recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A SEV-SNP attestation report.
    SnpReport(Box<SnpReport>),
    /// A TDX TDREPORT.
    TdReport(Box<TdReport>),
    /// A TD quote (v4 or v5).
    TdQuote(Box<TdQuote>),
}

impl std::fmt::Display for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SnpReport(r) => r.fmt(f),
            Self::TdReport(r) => r.fmt(f),
            Self::TdQuote(q) => q.fmt(f),
        }
    }
}

/// Recognise a binary report or quote by size and header.
pub fn detect(bytes: &[u8]) -> Result<Parsed, Error> {
    if bytes.len() == abi::SNP_REPORT_LEN {
        if let Ok(r) = SnpReport::from_bytes(bytes) {
            return Ok(Parsed::SnpReport(Box::new(r)));
        }
    }
    if bytes.len() == abi::TDX_REPORT_LEN {
        if let Ok(r) = TdReport::from_bytes(bytes) {
            return Ok(Parsed::TdReport(Box::new(r)));
        }
    }
    if let (true, &[v0, v1, ..]) = (bytes.len() >= abi::TDX_QUOTE_HEADER_LEN, bytes) {
        let version = u16::from_le_bytes([v0, v1]);
        if version == 4 || version == 5 {
            return TdQuote::from_bytes(bytes).map(|q| Parsed::TdQuote(Box::new(q)));
        }
    }
    Err(Error::Malformed {
        what: "input",
        detail: format!(
            "{} bytes is none of: SEV-SNP report ({} bytes), TDREPORT ({} bytes), TD quote \
             v4/v5, or their hex/base64 text, or our evidence JSON",
            bytes.len(),
            abi::SNP_REPORT_LEN,
            abi::TDX_REPORT_LEN
        ),
    })
}

/// Pretty-print a file for `attest --parse FILE`.
///
/// Accepts a raw SEV-SNP report, a TDREPORT, a TD quote v4/v5, any of these as hex or
/// base64 text, or evidence JSON as [`crate::Attester::evidence`] produces it (SNP, TDX or
/// sample). Returns a human-readable, multi-line description.
pub fn describe_file(bytes: &[u8]) -> Result<String, Error> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    match text {
        Some(t) if t.starts_with('{') => describe_json(t),
        Some(t) if !t.is_empty() => {
            let compact: String = t.split_whitespace().collect();
            if compact.len() % 2 == 0 && compact.bytes().all(|b| b.is_ascii_hexdigit()) {
                let raw = hex::decode(&compact).map_err(|e| Error::Malformed {
                    what: "hex text",
                    detail: e.to_string(),
                })?;
                return Ok(format!("(decoded from hex text)\n{}", detect(&raw)?));
            }
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&compact) {
                return Ok(format!("(decoded from base64 text)\n{}", detect(&raw)?));
            }
            Ok(detect(bytes)?.to_string())
        }
        _ => Ok(detect(bytes)?.to_string()),
    }
}

fn describe_json(text: &str) -> Result<String, Error> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    if value.get("attestation_report").is_some() {
        let ev: crate::snp::SnpEvidence = serde_json::from_value(value)?;
        let mut raw = Vec::with_capacity(abi::SNP_REPORT_LEN);
        ev.attestation_report
            .write_bytes(&mut raw)
            .map_err(|e| Error::Malformed {
                what: "SNP evidence",
                detail: format!("cannot re-encode the report: {e}"),
            })?;
        let mut out = String::from(
            "SNP evidence (report re-encoded from JSON; reserved bytes shown as zero)\n",
        );
        out.push_str(&SnpReport::from_bytes(&raw)?.to_string());
        match &ev.cert_chain {
            None => out.push_str("  cert_chain           null\n"),
            Some(chain) => {
                for c in chain {
                    out.push_str(&format!(
                        "  cert_chain           {:?}, {} bytes\n",
                        c.cert_type,
                        c.data.len()
                    ));
                }
            }
        }
        return Ok(out);
    }
    if value.get("quote").is_some() {
        let ev: TdxEvidence = serde_json::from_value(value)?;
        let quote = ev.quote_bytes()?;
        let mut out = String::from("TDX evidence\n");
        out.push_str(&TdQuote::from_bytes(&quote)?.to_string());
        match ev.eventlog_bytes()? {
            None => out.push_str("  cc_eventlog          null\n"),
            Some(log) => out.push_str(&format!("  cc_eventlog          {} bytes\n", log.len())),
        }
        return Ok(out);
    }
    if value.get("svn").is_some() {
        let ev: SampleEvidence = serde_json::from_value(value)?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(&ev.report_data)
            .map_err(|e| Error::Malformed {
                what: "sample evidence",
                detail: e.to_string(),
            })?;
        return Ok(format!(
            "Sample evidence (no hardware; for tests only)\n  {:<20} {}\n  {:<20} {}\n",
            "svn",
            ev.svn,
            "report_data",
            hex::encode(data)
        ));
    }
    Err(Error::Malformed {
        what: "JSON",
        detail: "not SNP, TDX or sample evidence".into(),
    })
}
