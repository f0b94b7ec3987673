//! SEV-SNP report, TDREPORT and TD quote parsers, and the format detector.
#![no_main]

use cocoon_attester::parse::{describe_file, detect, snp::SnpReport, tdx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    let _ = describe_file(data);
    if let Ok(r) = SnpReport::from_bytes(data) {
        let _ = (
            r.current_tcb(),
            r.reported_tcb(),
            r.committed_tcb(),
            r.launch_tcb(),
        );
        let _ = (r.policy_abi(), r.signing_key(), r.signature_be());
        let _ = format!("{r:?}");
    }
    let _ = tdx::TdReport::from_bytes(data);
    if let Ok(q) = tdx::TdQuote::from_bytes(data) {
        let _ = q.version();
    }
});
