//! An ocicrypt key provider of the `cmd` kind: one JSON request on stdin, one answer on
//! stdout (ocicrypt `keywrap/keyprovider/keyprovider.go`, `docs/keyprovider.md`).
//!
//! Request: `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"<provider>":[<bytes>]},
//! "DecryptConfig":{"Parameters":..}},"optsdata":<bytes>},"keyunwrapparams":..}` or
//! `{"op":"keyunwrap","keyunwrapparams":{"dc":{"Parameters":{..}},"annotation":<bytes>}}`.
//! Answer: `{"keywrapresults":{"annotation":<bytes>}}` / `{"keyunwrapresults":{"optsdata":<bytes>}}`.
//!
//! `<bytes>`: Go's `encoding/json` writes `[]byte` as a standard-base64 string and reads a
//! base64 string or an integer array (skopeo works with upstream coco_keyprovider, whose
//! answers are serde `Vec<u8>` arrays); the Rust CoCo services (coco_keyprovider, ocicrypt-rs)
//! write `Vec<u8>` as an integer array, and ocicrypt-rs's wrap request sends `optsdata` as
//! the private options' JSON text itself. We read all three and answer base64 strings (Go's
//! own form) unless told to write arrays (ocicrypt-rs reads only arrays).
//!
//! The provider's parameters are upstream coco_keyprovider's: one string
//! `keyid=kbs:///<repo>/<type>/<tag>::keypath=/path/to/kek[::algorithm=A256GCM]`
//! (`skopeo copy --encryption-key provider:attestation-agent:keyid=..::keypath=..`). Unlike
//! upstream we refuse `sample=true` (a published key), a missing `keypath` (upstream then
//! makes a KEK it can only keep by registering it with a KBS) or `keyid`, and `A256CTR`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::keywrap::{self, Kek, B64, B64_LENIENT};
use super::{spec, ImageError};

/// How the answer encodes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ByteEncoding {
    /// Standard base64 strings (Go's `[]byte`; skopeo/containerd's ocicrypt).
    #[default]
    Base64,
    /// Integer arrays (serde's `Vec<u8>`; ocicrypt-rs's `cmd` key provider reads only these).
    Array,
}

/// Settings of the `keyprovider` command.
#[derive(Debug, Clone, Default)]
pub struct KeyProviderOptions {
    /// Which `Parameters` entry is ours: the provider's name in ocicrypt.conf.
    pub provider_name: String,
    /// A KEK for `keyunwrap` when the request's parameters name no `keypath`.
    pub kek: Option<PathBuf>,
    /// How to write bytes in the answer.
    pub encoding: ByteEncoding,
}

/// The parsed provider parameters (`k=v::k=v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderParams {
    /// `keyid`: the KBS resource URI of the KEK.
    pub keyid: Option<String>,
    /// `keypath`: where the KEK is on this host.
    pub keypath: Option<PathBuf>,
}

/// Parses `keyid=..::keypath=..::algorithm=..::sample=..` as upstream does (pairs split on
/// `::`, each on its first `=`), refusing what we cannot honour.
pub fn parse_params(text: &str) -> Result<ProviderParams, ImageError> {
    let bad = |why: String| ImageError::Params(why);
    let map: BTreeMap<&str, &str> = text
        .trim()
        .split("::")
        .filter_map(|f| f.split_once('='))
        .collect();
    if let Some(sample) = map.get("sample") {
        if sample.parse::<bool>().unwrap_or(false) {
            return Err(bad(
                "sample=true encrypts with upstream's published sample key; refused".into(),
            ));
        }
    }
    if let Some(alg) = map.get("algorithm") {
        if *alg != spec::PACKET_WRAP_TYPE_A256GCM {
            return Err(bad(format!("algorithm {alg:?}: only A256GCM is supported")));
        }
    }
    Ok(ProviderParams {
        keyid: map.get("keyid").map(|s| s.to_string()),
        keypath: map.get("keypath").map(PathBuf::from),
    })
}

/// Reads a protocol `<bytes>` value: base64 string, integer array, or (ocicrypt-rs's
/// `optsdata`) JSON text sent as a string. `None` for a missing or null field.
pub fn bytes_value(v: Option<&Value>, what: &str) -> Result<Option<Vec<u8>>, ImageError> {
    let bad = || ImageError::Protocol(format!("{what}: not bytes (base64 string or array)"));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match B64_LENIENT.decode(s.trim()) {
            Ok(b) => Ok(Some(b)),
            // Never base64: `{` is not in its alphabet.
            Err(_) if s.trim_start().starts_with('{') => Ok(Some(s.as_bytes().to_vec())),
            Err(_) => Err(bad()),
        },
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(Some)
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// The entries of `config.Parameters[name]` (an `EncryptConfig` or `DecryptConfig`), each
/// decoded to a string.
fn parameters(config: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, ImageError> {
    let Some(params) = config.and_then(|c| c.get("Parameters")) else {
        return Ok(None);
    };
    let Some(list) = params.get(name) else {
        return Ok(None);
    };
    let list = match list {
        Value::Null => return Ok(None),
        Value::Array(a) => a,
        _ => {
            return Err(ImageError::Protocol(format!(
                "Parameters.{name}: not a list"
            )))
        }
    };
    list.iter()
        .map(|item| {
            let b = bytes_value(Some(item), &format!("Parameters.{name}"))?.unwrap_or_default();
            String::from_utf8(b)
                .map_err(|_| ImageError::Protocol(format!("Parameters.{name}: not UTF-8")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn names(config: Option<&Value>) -> String {
    let keys: Vec<String> = config
        .and_then(|c| c.get("Parameters"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

fn encode(bytes: &[u8], encoding: ByteEncoding) -> Value {
    match encoding {
        ByteEncoding::Base64 => Value::String(B64.encode(bytes)),
        ByteEncoding::Array => Value::Array(bytes.iter().map(|b| json!(b)).collect()),
    }
}

/// Answers one keyprovider request (the JSON bytes read from stdin) with the JSON to write
/// to stdout.
pub fn handle(request: &[u8], opts: &KeyProviderOptions) -> Result<Vec<u8>, ImageError> {
    let req: Value = serde_json::from_slice(request)
        .map_err(|e| ImageError::Protocol(format!("request is not JSON: {e}")))?;
    let op = req
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| ImageError::Protocol("no op".into()))?;
    let name = opts.provider_name.as_str();
    let answer = match op {
        spec::OP_KEYWRAP => {
            let params = req.get("keywrapparams");
            let ec = params.and_then(|p| p.get("ec"));
            let list = parameters(ec, name)?.ok_or_else(|| {
                ImageError::Params(format!(
                    "no parameters for provider {name:?} (request has: {}); use \
                     --encryption-key provider:{name}:keyid=kbs:///..::keypath=..",
                    names(ec)
                ))
            })?;
            let [one] = list.as_slice() else {
                return Err(ImageError::Params(format!(
                    "{} parameter sets for {name:?}: one KEK per image",
                    list.len()
                )));
            };
            let p = parse_params(one)?;
            let kid = p
                .keyid
                .ok_or_else(|| ImageError::Params("no keyid=kbs:///<repo>/<type>/<tag>".into()))?;
            let path = p
                .keypath
                .ok_or_else(|| ImageError::Params("no keypath=<KEK file>".into()))?;
            let kek = Kek::from_file(&path)?;
            let optsdata = Zeroizing::new(
                bytes_value(params.and_then(|p| p.get("optsdata")), "optsdata")?
                    .ok_or_else(|| ImageError::Protocol("keywrap without optsdata".into()))?,
            );
            let packet = keywrap::wrap_packet(&kek, &kid, &optsdata)?;
            json!({"keywrapresults": {"annotation": encode(&packet, opts.encoding)}})
        }
        spec::OP_KEYUNWRAP => {
            let params = req.get("keyunwrapparams");
            let dc = params.and_then(|p| p.get("dc"));
            let keypath = match parameters(dc, name)? {
                Some(list) => list
                    .iter()
                    .map(|s| parse_params(s))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .find_map(|p| p.keypath),
                None => None,
            };
            let path = keypath.or_else(|| opts.kek.clone()).ok_or_else(|| {
                ImageError::Params("keyunwrap needs a KEK: keypath=.. or --kek".into())
            })?;
            let kek = Kek::from_file(&path)?;
            let packet = bytes_value(params.and_then(|p| p.get("annotation")), "annotation")?
                .ok_or_else(|| ImageError::Protocol("keyunwrap without annotation".into()))?;
            let (_kid, optsdata) = keywrap::unwrap_packet(&kek, &packet)?;
            json!({"keyunwrapresults": {"optsdata": encode(&optsdata, opts.encoding)}})
        }
        other => return Err(ImageError::Protocol(format!("unknown op {other:?}"))),
    };
    serde_json::to_vec(&answer).map_err(|e| ImageError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn params_like_upstream() {
        let p = parse_params("keyid=kbs:///default/key/1::keypath=/k::algorithm=A256GCM").unwrap();
        assert_eq!(p.keyid.as_deref(), Some("kbs:///default/key/1"));
        assert_eq!(p.keypath, Some(PathBuf::from("/k")));
        let p = parse_params("keypath=/a=b").unwrap();
        assert_eq!(p.keypath, Some(PathBuf::from("/a=b")));
        assert!(parse_params("sample=true").is_err());
        assert!(parse_params("keyid=kbs:///a/b/c::algorithm=A256CTR").is_err());
        assert_eq!(parse_params("sample=false").unwrap().keyid, None);
    }

    #[test]
    fn byte_forms() {
        let s = json!("aGk=");
        assert_eq!(bytes_value(Some(&s), "x").unwrap().unwrap(), b"hi");
        let s = json!("aGk");
        assert_eq!(bytes_value(Some(&s), "x").unwrap().unwrap(), b"hi");
        let a = json!([104, 105]);
        assert_eq!(bytes_value(Some(&a), "x").unwrap().unwrap(), b"hi");
        let raw = json!("{\"symkey\":\"x\"}");
        assert_eq!(
            bytes_value(Some(&raw), "x").unwrap().unwrap(),
            b"{\"symkey\":\"x\"}"
        );
        assert!(bytes_value(Some(&json!([256])), "x").is_err());
        assert!(bytes_value(Some(&json!("!!")), "x").is_err());
        assert!(bytes_value(Some(&Value::Null), "x").unwrap().is_none());
    }
}
