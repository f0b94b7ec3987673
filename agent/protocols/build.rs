//! Compiles `protos/*.proto` with ttrpc-codegen (rust-protobuf 3 backend, async ttrpc
//! services) into `$OUT_DIR`, adding serde derives so requests can be evaluated as JSON
//! by the policy engine.

use std::path::{Path, PathBuf};

use protobuf::descriptor::field_descriptor_proto::Type;
use protobuf::reflect::{EnumDescriptor, FieldDescriptor, MessageDescriptor, OneofDescriptor};
use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize, ProtobufCustomizeCallback};

/// The proto files, in dependency order. Each becomes a module of the same name.
const PROTOS: &[&str] = &["oci", "types", "csi", "health", "agent"];

const SERDE_DERIVE: &str = "#[derive(::serde::Serialize, ::serde::Deserialize)]";

/// Adds serde to every generated type. `MessageField` and `EnumOrUnknown` have no serde
/// impls in rust-protobuf 3, so fields of those types go through helpers in `lib.rs`.
struct Serde;

impl ProtobufCustomizeCallback for Serde {
    fn message(&self, _: &MessageDescriptor) -> ProtobufCustomize {
        ProtobufCustomize::default().before(&format!("{SERDE_DERIVE}\n#[serde(default)]"))
    }

    fn enumeration(&self, _: &EnumDescriptor) -> ProtobufCustomize {
        ProtobufCustomize::default().before(SERDE_DERIVE)
    }

    fn oneof(&self, _: &OneofDescriptor) -> ProtobufCustomize {
        ProtobufCustomize::default().before(SERDE_DERIVE)
    }

    fn field(&self, field: &FieldDescriptor) -> ProtobufCustomize {
        let proto = field.proto();
        let with = if proto.type_() == Type::TYPE_ENUM && field.is_singular() {
            Some("crate::serde_enum")
        } else if proto.type_() == Type::TYPE_MESSAGE && field.is_singular() {
            Some("crate::serde_message")
        } else {
            None
        };
        match with {
            Some(module) => {
                ProtobufCustomize::default().before(&format!("#[serde(with = \"{module}\")]"))
            }
            None => ProtobufCustomize::default(),
        }
    }

    fn special_field(&self, _: &MessageDescriptor, _: &str) -> ProtobufCustomize {
        ProtobufCustomize::default().before("#[serde(skip)]")
    }
}

/// Generated files start with inner attributes and `//!` docs; we `include!` them inside
/// a `mod`, where those are not allowed, so drop them (lib.rs carries the allows).
///
/// The generated default for a method the server does not implement answers
/// `NOT_FOUND "... is not supported"`; gRPC and the Kata runtime expect `UNIMPLEMENTED`,
/// so rewrite it (the message keeps the full method name).
fn post_process(path: &Path) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
        .collect();
    let text = kept
        .join("\n")
        .replace(
            "::ttrpc::Code::NOT_FOUND, \"/",
            "::ttrpc::Code::UNIMPLEMENTED, \"/",
        )
        .replace(" is not supported\"", " is not implemented\"");
    std::fs::write(path, text)
}

fn main() -> std::io::Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?);
    let inputs: Vec<String> = PROTOS.iter().map(|p| format!("protos/{p}.proto")).collect();
    for input in &inputs {
        println!("cargo:rerun-if-changed={input}");
    }

    Codegen::new()
        .out_dir(&out_dir)
        .inputs(&inputs)
        .include("protos")
        .customize(Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf()
        .rust_protobuf_customize(ProtobufCustomize::default().gen_mod_rs(false))
        .rust_protobuf_customize_callback(Serde)
        .run()?;

    for entry in std::fs::read_dir(&out_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            post_process(&path)?;
        }
    }
    Ok(())
}
