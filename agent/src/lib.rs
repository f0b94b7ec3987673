//! The Cocoon agent: PID 1 and the Kata agent inside a confidential VM.
//!
//! This crate wires everything together. It owns start-up (as PID 1: the early mounts,
//! console, cgroups, hostname, loopback, kernel modules — see [`init`]), configuration
//! read the way upstream kata-agent reads it ([`config`]), structured logging
//! ([`logging`]), reaping of orphans and exit statuses ([`reaper`]), and the ttrpc server
//! that answers the Kata runtime's `grpc.AgentService` and `grpc.Health` over vsock
//! ([`server`], handlers in [`rpc`]). Data flows one way: a request arrives in [`rpc`],
//! is checked, acted on, and answered; later crates (attestation, image pull) are called
//! from here and never call back.
// Guest code: a panic here takes the agent (PID 1) and the VM down. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]

pub mod attestation;
pub mod cgroups;
pub mod config;
pub mod container;
pub mod copy_file;
pub mod create;
pub mod debug_console;
pub mod devices;
pub mod diagnostic;
pub mod ephemeral;
pub mod error;
pub mod host_input;
pub mod hotplug;
pub mod image;
pub mod init;
pub mod initdata;
pub mod iptables;
pub mod kbs;
pub mod logging;
pub mod mem_agent;
pub mod metrics;
pub mod mounts;
pub mod namespaces;
pub mod network;
pub mod oci;
pub mod paths;
pub mod pidfd;
pub mod policy;
pub mod process;
pub mod reaper;
pub mod rpc;
pub mod safe_path;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod storage;
pub mod streams;
pub mod swap;
pub mod users;
pub mod volume;

/// The static guest binary (musl) allocates with mimalloc: musl's allocator made the
/// policy check a third slower (BENCHMARKS.md, agent policy). Declared here, not in
/// `main.rs`, so that the benchmarks linking this crate measure what the agent runs.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The agent's version, reported by `Health.Version` and `GetGuestDetails`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
