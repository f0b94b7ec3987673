//! The Kata agent wire protocol.
//!
//! Owns our `.proto` files (`protos/`), written to the shape of upstream kata-containers'
//! `src/libs/protocols/protos` — same packages (`grpc`, `types`), service, method and
//! message names and field numbers — so the Kata runtime's shims talk to Cocoon
//! unchanged. `build.rs` compiles them with `ttrpc-codegen` into async ttrpc services and
//! rust-protobuf 3 messages with serde derives (the policy engine reads requests as
//! JSON). Protocol constants (service names, ports, limits) live in [`wire`].

#![allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unknown_lints,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_results,
    unused_mut,
    missing_docs,
    trivial_casts,
    unused_imports
)]

pub mod wire;

macro_rules! generated {
    ($($name:ident),*) => {$(
        #[allow(
            clippy::all,
            clippy::undocumented_unsafe_blocks,
            clippy::unwrap_used,
            unused_qualifications
        )]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
        }
    )*};
}

generated!(oci, types, csi, health, agent, health_ttrpc, agent_ttrpc);

/// Serde for rust-protobuf's `MessageField<T>`: absent is `null`.
pub mod serde_message {
    use protobuf::MessageField;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        field: &MessageField<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        field.as_ref().serialize(s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<MessageField<T>, D::Error> {
        Ok(MessageField::from_option(Option::<T>::deserialize(d)?))
    }
}

/// Serde for rust-protobuf's `EnumOrUnknown<E>`: the enum's variant name, or its number.
pub mod serde_enum {
    use protobuf::{Enum, EnumOrUnknown};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<E: Enum + Serialize, S: Serializer>(
        value: &EnumOrUnknown<E>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value.enum_value() {
            Ok(known) => known.serialize(s),
            Err(number) => s.serialize_i32(number),
        }
    }

    pub fn deserialize<'de, E: Enum + Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<EnumOrUnknown<E>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NameOrNumber<E> {
            Name(E),
            Number(i32),
        }
        Ok(match NameOrNumber::<E>::deserialize(d)? {
            NameOrNumber::Name(e) => EnumOrUnknown::new(e),
            NameOrNumber::Number(n) => EnumOrUnknown::from_i32(n),
        })
    }
}
