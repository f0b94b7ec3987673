//! A ttrpc frame from the host: the 10-byte header, the ttrpc `Request` envelope, then one
//! AgentService request type (chosen by the first byte) decoded with rust-protobuf, and
//! for CreateContainer the agent's own OCI conversion. No OS effects.
#![no_main]

use cocoon_protocols::agent;
use libfuzzer_sys::fuzz_target;
use protobuf::Message;

fn roundtrip<M: Message>(bytes: &[u8]) -> Option<M> {
    let m = M::parse_from_bytes(bytes).ok()?;
    let out = m.write_to_bytes().expect("a parsed message serializes");
    let again = M::parse_from_bytes(&out).expect("a serialized message parses");
    assert!(
        m == again,
        "parse -> serialize -> parse changed the message"
    );
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let payload = if data.len() >= ttrpc::proto::MESSAGE_HEADER_LENGTH {
        let (head, rest) = data.split_at(ttrpc::proto::MESSAGE_HEADER_LENGTH);
        let header = ttrpc::MessageHeader::from(head);
        let bytes: Vec<u8> = header.into();
        assert_eq!(bytes, head, "header roundtrip");
        let len = (header.length as usize).min(rest.len());
        if let Some(req) = roundtrip::<ttrpc::Request>(&rest[..len]) {
            let _ = (req.service.len(), req.method.len());
        }
        rest
    } else {
        data
    };
    match selector % 8 {
        0 => {
            if let Some(req) = roundtrip::<agent::CreateContainerRequest>(payload) {
                if let Some(spec) = req.OCI.as_ref() {
                    let _ = cocoon_agent::oci::to_oci(spec);
                    let _ = cocoon_agent::oci::to_oci_with(spec, true);
                }
            }
        }
        1 => {
            if let Some(req) = roundtrip::<agent::ExecProcessRequest>(payload) {
                if let Some(p) = req.process.as_ref() {
                    let _ = cocoon_agent::oci::process_json(p);
                }
            }
        }
        2 => drop(roundtrip::<agent::CopyFileRequest>(payload)),
        3 => drop(roundtrip::<agent::UpdateInterfaceRequest>(payload)),
        4 => drop(roundtrip::<agent::SetPolicyRequest>(payload)),
        5 => drop(roundtrip::<agent::UpdateRoutesRequest>(payload)),
        6 => drop(roundtrip::<agent::UpdateContainerRequest>(payload)),
        _ => drop(roundtrip::<agent::CreateSandboxRequest>(payload)),
    }
});
