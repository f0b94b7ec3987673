#![allow(clippy::unwrap_used)]
//! Checks that the generated schema has upstream Kata's shape: method list and order,
//! field numbers of the messages the runtime relies on, and serde round-trips.

use cocoon_protocols::{agent, csi, health, oci, types};
use protobuf::descriptor::field_descriptor_proto::{Label, Type};
use protobuf::reflect::MessageDescriptor;
use protobuf::{Enum, EnumFull, Message, MessageField, MessageFull};

/// Upstream `AgentService`, in declaration order.
const AGENT_METHODS: [&str; 42] = [
    "CreateContainer",
    "StartContainer",
    "RemoveContainer",
    "ExecProcess",
    "SignalProcess",
    "WaitProcess",
    "UpdateContainer",
    "UpdateEphemeralMounts",
    "StatsContainer",
    "PauseContainer",
    "ResumeContainer",
    "RemoveStaleVirtiofsShareMounts",
    "GetDiagnosticData",
    "WriteStdin",
    "ReadStdout",
    "ReadStderr",
    "CloseStdin",
    "TtyWinResize",
    "UpdateInterface",
    "UpdateRoutes",
    "ListInterfaces",
    "ListRoutes",
    "AddARPNeighbors",
    "GetIPTables",
    "SetIPTables",
    "GetMetrics",
    "MemAgentMemcgSet",
    "MemAgentCompactSet",
    "CreateSandbox",
    "DestroySandbox",
    "OnlineCPUMem",
    "ReseedRandomDev",
    "GetGuestDetails",
    "MemHotplugByProbe",
    "SetGuestDateTime",
    "CopyFile",
    "GetOOMEvent",
    "AddSwap",
    "AddSwapPath",
    "GetVolumeStats",
    "ResizeVolume",
    "SetPolicy",
];

/// Asserts a field's number, wire type, and whether it is repeated.
fn assert_field(msg: &MessageDescriptor, name: &str, number: i32, ty: Type, repeated: bool) {
    let field = msg
        .field_by_name(name)
        .unwrap_or_else(|| panic!("{}: no field {name}", msg.full_name()));
    let proto = field.proto();
    assert_eq!(proto.number(), number, "{}.{name} number", msg.full_name());
    assert_eq!(proto.type_(), ty, "{}.{name} type", msg.full_name());
    let label = if repeated {
        Label::LABEL_REPEATED
    } else {
        Label::LABEL_OPTIONAL
    };
    assert_eq!(proto.label(), label, "{}.{name} label", msg.full_name());
}

fn assert_type_name(msg: &MessageDescriptor, name: &str, type_name: &str) {
    let field = msg.field_by_name(name).unwrap();
    assert_eq!(
        field.proto().type_name(),
        type_name,
        "{}.{name}",
        msg.full_name()
    );
}

#[test]
fn agent_service_has_upstream_methods_in_order() {
    let file = agent::file_descriptor();
    assert_eq!(file.package(), "grpc");
    let services = file.services().collect::<Vec<_>>();
    assert_eq!(services.len(), 1);
    let service = &services[0];
    assert_eq!(service.proto().name(), "AgentService");
    let methods = service
        .methods()
        .map(|m| m.proto().name().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(methods, AGENT_METHODS);
}

#[test]
fn agent_method_signatures() {
    let file = agent::file_descriptor();
    let service = file.services().next().unwrap();
    let signature = |name: &str| {
        let m = service
            .methods()
            .find(|m| m.proto().name() == name)
            .unwrap();
        (
            m.proto().input_type().to_owned(),
            m.proto().output_type().to_owned(),
        )
    };
    let empty = ".google.protobuf.Empty".to_owned();
    assert_eq!(
        signature("CreateContainer"),
        (".grpc.CreateContainerRequest".into(), empty.clone())
    );
    assert_eq!(
        signature("ReadStderr"),
        (
            ".grpc.ReadStreamRequest".into(),
            ".grpc.ReadStreamResponse".into()
        )
    );
    assert_eq!(
        signature("UpdateInterface"),
        (
            ".grpc.UpdateInterfaceRequest".into(),
            ".types.Interface".into()
        )
    );
    assert_eq!(
        signature("GetGuestDetails"),
        (
            ".grpc.GuestDetailsRequest".into(),
            ".grpc.GuestDetailsResponse".into()
        )
    );
    assert_eq!(
        signature("MemAgentMemcgSet"),
        (".grpc.MemAgentMemcgConfig".into(), empty.clone())
    );
    assert_eq!(
        signature("GetVolumeStats"),
        (
            ".grpc.VolumeStatsRequest".into(),
            ".grpc.VolumeStatsResponse".into()
        )
    );
    assert_eq!(
        signature("SetPolicy"),
        (".grpc.SetPolicyRequest".into(), empty)
    );
}

#[test]
fn create_container_request_fields() {
    let msg = agent::CreateContainerRequest::descriptor();
    assert_eq!(msg.full_name(), "grpc.CreateContainerRequest");
    assert_field(&msg, "container_id", 1, Type::TYPE_STRING, false);
    assert_field(&msg, "exec_id", 2, Type::TYPE_STRING, false);
    assert_field(&msg, "string_user", 3, Type::TYPE_MESSAGE, false);
    assert_field(&msg, "devices", 4, Type::TYPE_MESSAGE, true);
    assert_field(&msg, "storages", 5, Type::TYPE_MESSAGE, true);
    assert_field(&msg, "OCI", 6, Type::TYPE_MESSAGE, false);
    assert_type_name(&msg, "OCI", ".grpc.Spec");
    assert_field(&msg, "sandbox_pidns", 7, Type::TYPE_BOOL, false);
    assert_field(&msg, "shared_mounts", 8, Type::TYPE_MESSAGE, true);
    assert_field(&msg, "stdin_port", 9, Type::TYPE_UINT32, false);
    assert_field(&msg, "stdout_port", 10, Type::TYPE_UINT32, false);
    assert_field(&msg, "stderr_port", 11, Type::TYPE_UINT32, false);

    let storage = agent::Storage::descriptor();
    assert_field(&storage, "driver", 1, Type::TYPE_STRING, false);
    assert_field(&storage, "mount_point", 6, Type::TYPE_STRING, false);
    assert_field(&storage, "fs_group", 7, Type::TYPE_MESSAGE, false);

    let fs_group = agent::FSGroup::descriptor();
    assert_field(&fs_group, "group_id", 2, Type::TYPE_UINT32, false);
    assert_field(&fs_group, "group_change_policy", 3, Type::TYPE_ENUM, false);
    assert_type_name(
        &fs_group,
        "group_change_policy",
        ".types.FSGroupChangePolicy",
    );
}

#[test]
fn oci_spec_keeps_upstream_field_names() {
    let spec = oci::Spec::descriptor();
    assert_field(&spec, "Version", 1, Type::TYPE_STRING, false);
    assert_field(&spec, "Process", 2, Type::TYPE_MESSAGE, false);
    assert_field(&spec, "Root", 3, Type::TYPE_MESSAGE, false);
    assert_field(&spec, "Mounts", 5, Type::TYPE_MESSAGE, true);
    assert_field(&spec, "Linux", 8, Type::TYPE_MESSAGE, false);
    assert!(spec.field_by_name("Annotations").unwrap().is_map());

    let process = oci::Process::descriptor();
    assert_field(&process, "ConsoleSize", 2, Type::TYPE_MESSAGE, false);
    assert_type_name(&process, "ConsoleSize", ".grpc.Box");
    assert_field(&process, "OOMScoreAdj", 11, Type::TYPE_INT64, false);

    let mount = oci::Mount::descriptor();
    assert_field(&mount, "destination", 1, Type::TYPE_STRING, false);
    assert_field(&mount, "options", 4, Type::TYPE_STRING, true);

    let syscall = oci::LinuxSyscall::descriptor();
    assert_field(&syscall, "errnoret", 3, Type::TYPE_UINT32, false);
    assert_eq!(syscall.oneofs().next().unwrap().name(), "ErrnoRet");
}

#[test]
fn guest_details_fields() {
    let req = agent::GuestDetailsRequest::descriptor();
    assert_field(&req, "mem_block_size", 1, Type::TYPE_BOOL, false);
    assert_field(&req, "mem_hotplug_probe", 2, Type::TYPE_BOOL, false);

    let resp = agent::GuestDetailsResponse::descriptor();
    assert_field(&resp, "mem_block_size_bytes", 1, Type::TYPE_UINT64, false);
    assert_field(&resp, "agent_details", 2, Type::TYPE_MESSAGE, false);
    assert_field(
        &resp,
        "support_mem_hotplug_probe",
        3,
        Type::TYPE_BOOL,
        false,
    );

    let details = agent::AgentDetails::descriptor();
    assert_field(&details, "version", 1, Type::TYPE_STRING, false);
    assert_field(&details, "init_daemon", 2, Type::TYPE_BOOL, false);
    assert_field(&details, "device_handlers", 3, Type::TYPE_STRING, true);
    assert_field(&details, "storage_handlers", 4, Type::TYPE_STRING, true);
    assert_field(&details, "supports_seccomp", 5, Type::TYPE_BOOL, false);
    assert_field(&details, "extra_features", 6, Type::TYPE_STRING, true);
}

#[test]
fn health_service_and_messages() {
    let file = health::file_descriptor();
    assert_eq!(file.package(), "grpc");
    let service = file.services().next().unwrap();
    assert_eq!(service.proto().name(), "Health");
    let methods = service
        .methods()
        .map(|m| m.proto().name().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(methods, ["Check", "Version"]);

    assert_field(
        &health::CheckRequest::descriptor(),
        "service",
        1,
        Type::TYPE_STRING,
        false,
    );
    let resp = health::HealthCheckResponse::descriptor();
    assert_field(&resp, "status", 1, Type::TYPE_ENUM, false);
    assert_type_name(&resp, "status", ".grpc.HealthCheckResponse.ServingStatus");

    let status = health::health_check_response::ServingStatus::enum_descriptor();
    let values = status
        .values()
        .map(|v| (v.name().to_owned(), v.value()))
        .collect::<Vec<_>>();
    assert_eq!(
        values,
        [
            ("UNKNOWN".to_owned(), 0),
            ("SERVING".to_owned(), 1),
            ("NOT_SERVING".to_owned(), 2)
        ]
    );

    let version = health::VersionCheckResponse::descriptor();
    assert_field(&version, "grpc_version", 1, Type::TYPE_STRING, false);
    assert_field(&version, "agent_version", 2, Type::TYPE_STRING, false);
}

#[test]
fn types_and_csi_packages() {
    assert_eq!(types::file_descriptor().package(), "types");
    assert_eq!(csi::file_descriptor().package(), "grpc");
    let iface = types::Interface::descriptor();
    assert_field(&iface, "IPAddresses", 3, Type::TYPE_MESSAGE, true);
    assert_field(&iface, "devicePath", 6, Type::TYPE_STRING, false);
    assert_field(&iface, "raw_flags", 8, Type::TYPE_UINT32, false);
    assert_eq!(types::IPFamily::v6.value(), 1);
    assert_eq!(types::FSGroupChangePolicy::OnRootMismatch.value(), 1);
    assert_eq!(csi::volume_usage::Unit::INODES.value(), 2);
}

#[test]
fn encodes_with_upstream_tags() {
    let req = agent::ExecProcessRequest {
        container_id: "c".into(),
        stdout_port: 5,
        ..Default::default()
    };
    // Field 1 length-delimited "c", then field 6 varint 5.
    assert_eq!(
        req.write_to_bytes().unwrap(),
        [0x0a, 0x01, b'c', 0x30, 0x05]
    );
}

fn sample_create_container_request() -> agent::CreateContainerRequest {
    let spec = oci::Spec {
        Version: "1.1.0".into(),
        Process: MessageField::some(oci::Process {
            Terminal: true,
            ConsoleSize: MessageField::some(oci::Box {
                Height: 24,
                Width: 80,
                ..Default::default()
            }),
            Args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            Cwd: "/".into(),
            ..Default::default()
        }),
        Root: MessageField::some(oci::Root {
            Path: "rootfs".into(),
            Readonly: true,
            ..Default::default()
        }),
        Annotations: [(
            "io.kubernetes.cri.container-type".to_owned(),
            "container".to_owned(),
        )]
        .into(),
        Linux: MessageField::some(oci::Linux {
            Seccomp: MessageField::some(oci::LinuxSeccomp {
                DefaultAction: "SCMP_ACT_ERRNO".into(),
                Syscalls: vec![oci::LinuxSyscall {
                    Names: vec!["read".into()],
                    Action: "SCMP_ACT_ALLOW".into(),
                    ErrnoRet: Some(oci::linux_syscall::ErrnoRet::Errnoret(1)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    agent::CreateContainerRequest {
        container_id: "ctr".into(),
        exec_id: "ctr".into(),
        storages: vec![agent::Storage {
            driver: "blk".into(),
            source: "0000:00:02.0".into(),
            mount_point: "/run/kata-containers/ctr/rootfs".into(),
            fs_group: MessageField::some(agent::FSGroup {
                group_id: 1000,
                group_change_policy: types::FSGroupChangePolicy::OnRootMismatch.into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        OCI: MessageField::some(spec),
        sandbox_pidns: true,
        ..Default::default()
    }
}

#[test]
fn create_container_request_serde_round_trip() {
    let req = sample_create_container_request();
    let json = serde_json::to_value(&req).unwrap();
    assert_eq!(json["container_id"], "ctr");
    assert_eq!(json["OCI"]["Process"]["ConsoleSize"]["Width"], 80);
    assert_eq!(
        json["storages"][0]["fs_group"]["group_change_policy"],
        "OnRootMismatch"
    );
    assert!(json["string_user"].is_null());

    let back: agent::CreateContainerRequest = serde_json::from_value(json).unwrap();
    assert_eq!(back, req);

    // Missing fields take their defaults.
    let sparse: agent::CreateContainerRequest =
        serde_json::from_str(r#"{"container_id":"x","OCI":{"Version":"1.0.2"}}"#).unwrap();
    assert_eq!(sparse.container_id, "x");
    assert_eq!(sparse.OCI.Version, "1.0.2");
    assert!(sparse.storages.is_empty());
}

#[test]
fn create_container_request_protobuf_round_trip() {
    let req = sample_create_container_request();
    let bytes = req.write_to_bytes().unwrap();
    assert_eq!(
        agent::CreateContainerRequest::parse_from_bytes(&bytes).unwrap(),
        req
    );
}
