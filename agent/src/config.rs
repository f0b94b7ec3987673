//! The agent's configuration, read the way upstream kata-agent reads it.
//!
//! Sources, lowest precedence first:
//! 1. built-in defaults (upstream's);
//! 2. a TOML file — `--config FILE`, or `agent.config_file=FILE` on the kernel command line;
//! 3. `agent.*` keys on the kernel command line (ignored when `--config` was given, as
//!    upstream does);
//! 4. the environment: `KATA_AGENT_SERVER_ADDR`, `KATA_AGENT_LOG_LEVEL`,
//!    `KATA_AGENT_POLICY_FILE`.
//!
//! Unknown `agent.*` keys are collected as warnings (logged once logging is up); a
//! malformed value for a known key is an error naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use cocoon_attester::AttesterChoice;
use cocoon_protocols::wire;

/// Kernel command-line keys and environment variables, as upstream spells them
/// (kata-containers `src/agent/src/config.rs`).
pub mod keys {
    pub const LOG: &str = "agent.log";
    pub const SERVER_ADDR: &str = "agent.server_addr";
    pub const LOG_VPORT: &str = "agent.log_vport";
    pub const DEBUG_CONSOLE: &str = "agent.debug_console";
    pub const DEBUG_CONSOLE_VPORT: &str = "agent.debug_console_vport";
    pub const DEVMODE: &str = "agent.devmode";
    pub const TRACE: &str = "agent.trace";
    pub const HOTPLUG_TIMEOUT: &str = "agent.hotplug_timeout";
    pub const IMAGE_PULL_TIMEOUT: &str = "agent.image_pull_timeout";
    pub const LAUNCH_PROCESS_TIMEOUT: &str = "agent.launch_process_timeout";
    pub const CONTAINER_PIPE_SIZE: &str = "agent.container_pipe_size";
    pub const CONFIG_FILE: &str = "agent.config_file";
    pub const GUEST_COMPONENTS_REST_API: &str = "agent.guest_components_rest_api";
    pub const GUEST_COMPONENTS_PROCS: &str = "agent.guest_components_procs";
    pub const SECURE_STORAGE_INTEGRITY: &str = "agent.secure_storage_integrity";
    pub const HTTPS_PROXY: &str = "agent.https_proxy";
    pub const NO_PROXY: &str = "agent.no_proxy";
    pub const UNIFIED_CGROUP_HIERARCHY: &str = "agent.unified_cgroup_hierarchy";
    pub const AA_KBC_PARAMS: &str = "agent.aa_kbc_params";
    /// Cocoon's own: explicit opt-in to an attester (`sample` for no TEE).
    pub const ATTESTER: &str = "agent.attester";
    /// The agent policy (Rego) to start with.
    pub const POLICY_FILE: &str = "agent.policy_file";
    /// Cocoon's own: an initdata image file (instead of scanning for the device).
    pub const INITDATA: &str = "agent.initdata";
    pub const CGROUP_NO_V1: &str = "cgroup_no_v1";
    pub const SYSTEMD_UNIFIED_CGROUP_HIERARCHY: &str = "systemd.unified_cgroup_hierarchy";

    pub const ENV_SERVER_ADDR: &str = "KATA_AGENT_SERVER_ADDR";
    pub const ENV_LOG_LEVEL: &str = "KATA_AGENT_LOG_LEVEL";
    pub const ENV_POLICY_FILE: &str = "KATA_AGENT_POLICY_FILE";
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid agent config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Log verbosity, with the logrus names upstream accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" | "critical" | "fatal" | "panic" => LogLevel::Error,
            _ => return Err("expected trace, debug, info, warn, error or critical".into()),
        })
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Which parts of the workload-facing REST API are served (upstream
/// `agent.guest_components_rest_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum RestApi {
    None,
    Attestation,
    Resource,
    All,
}

impl std::str::FromStr for RestApi {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => RestApi::None,
            "attestation" => RestApi::Attestation,
            "resource" => RestApi::Resource,
            "all" => RestApi::All,
            _ => return Err("expected none, attestation, resource or all".into()),
        })
    }
}

impl TryFrom<String> for RestApi {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Where the agent serves ttrpc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// `vsock://CID:PORT`; CID -1 means any.
    Vsock { cid: Option<u32>, port: u32 },
    /// `unix:///path` or `unix://@abstract`.
    Unix(String),
}

impl ServerAddr {
    /// The address in the URI form ttrpc binds.
    pub fn uri(&self) -> String {
        match self {
            ServerAddr::Vsock { cid: None, port } => format!("vsock://-1:{port}"),
            ServerAddr::Vsock {
                cid: Some(cid),
                port,
            } => format!("vsock://{cid}:{port}"),
            ServerAddr::Unix(path) => format!("unix://{path}"),
        }
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

impl std::str::FromStr for ServerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("vsock://") {
            let (cid, port) = rest
                .split_once(':')
                .ok_or("expected vsock://CID:PORT".to_string())?;
            let cid = match cid {
                "-1" => None,
                c => Some(
                    c.parse::<u32>()
                        .map_err(|e| format!("bad vsock CID: {e}"))?,
                ),
            };
            let port = port
                .parse::<u32>()
                .map_err(|e| format!("bad vsock port: {e}"))?;
            Ok(ServerAddr::Vsock { cid, port })
        } else if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() || path == "@" {
                return Err("empty unix socket path".into());
            }
            if !path.starts_with('/') && !path.starts_with('@') {
                return Err("expected unix:///absolute/path or unix://@name".into());
            }
            Ok(ServerAddr::Unix(path.to_string()))
        } else {
            Err("expected vsock://CID:PORT, unix:///path or unix://@name".into())
        }
    }
}

impl TryFrom<String> for ServerAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl<'de> Deserialize<'de> for ServerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The KBS address for attestation, from `agent.aa_kbc_params=cc_kbc::<url>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct KbcParams {
    /// Key broker client name; upstream uses `cc_kbc` for Trustee.
    pub kbc: String,
    /// The KBS base URL, e.g. `http://10.0.2.2:8080`.
    pub url: String,
}

impl std::str::FromStr for KbcParams {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kbc, url) = s
            .split_once("::")
            .ok_or("expected <kbc>::<kbs url>, e.g. cc_kbc::http://10.0.2.2:8080".to_string())?;
        if kbc.is_empty() {
            return Err("empty KBC name".into());
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err("the KBS URL must start with http:// or https://".into());
        }
        Ok(KbcParams {
            kbc: kbc.to_string(),
            url: url.to_string(),
        })
    }
}

impl TryFrom<String> for KbcParams {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Everything the agent is configured with. Field names are the TOML keys (upstream's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub log_level: LogLevel,
    pub server_addr: ServerAddr,
    /// vsock port to stream logs on; 0 = log to stdout.
    pub log_vport: u32,
    pub debug_console: bool,
    pub debug_console_vport: u32,
    pub dev_mode: bool,
    pub tracing: bool,
    #[serde(with = "seconds")]
    pub hotplug_timeout: Duration,
    #[serde(with = "seconds")]
    pub image_pull_timeout: Duration,
    #[serde(with = "seconds")]
    pub launch_process_timeout: Duration,
    pub container_pipe_size: u32,
    pub guest_components_rest_api: RestApi,
    pub guest_components_procs: String,
    pub secure_storage_integrity: bool,
    pub https_proxy: String,
    pub no_proxy: String,
    pub unified_cgroup_hierarchy: bool,
    pub cgroup_no_v1: String,
    pub aa_kbc_params: Option<KbcParams>,
    /// PEM file of the CA that signed an `https://` KBS's certificate.
    pub kbs_cert_file: Option<PathBuf>,
    /// The same, as PEM text (initdata's `aa.toml` `cert` / `cdh.toml` `kbs_cert`); wins
    /// over `kbs_cert_file`.
    pub kbs_cert: Option<String>,
    /// Total time one KBS request may take, retries included (seconds).
    #[serde(with = "seconds")]
    pub kbs_deadline: Duration,
    /// Check the signature of sealed secrets (on by default; off only for testing).
    pub sealed_secret_verify: bool,
    /// Where the workload REST API listens (upstream api-server-rest: 127.0.0.1:8006).
    pub guest_components_rest_api_addr: std::net::SocketAddr,
    /// Explicitly requested attester (`sample` opts into the no-TEE attester).
    #[serde(deserialize_with = "parsed")]
    pub attester: Option<AttesterChoice>,
    pub policy_file: Option<PathBuf>,
    /// An initdata image (magic, length, gzip'd TOML) to use instead of looking for the
    /// initdata block device.
    pub initdata: Option<PathBuf>,
    /// Guest image pull (`[image]`, upstream CDH's key names).
    pub image: ImageSettings,
}

/// `[image]`: guest image pull, with upstream CDH's (image-rs `ImageConfig`) key names so
/// that existing configs work. URIs are `kbs:///...` (through the agent's KBS session),
/// `file:///...` or an absolute path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSettings {
    /// Where layers are stored (`<work_dir>/layers`) and overlays live.
    pub work_dir: PathBuf,
    /// Layers of one image fetched at the same time.
    pub max_concurrent_layer_downloads_per_image: usize,
    /// containers-registries.conf v2 (TOML) at this URI.
    pub registry_configuration_uri: Option<String>,
    /// The same, inline (`[image.registry_config]`, `[[image.registry_config.registry]]`).
    pub registry_config: Option<cocoon_image_pull::registry::RegistriesConf>,
    /// A docker `auth.json` at this URI.
    pub authenticated_registry_credentials_uri: Option<String>,
    /// Proxy for registry traffic (else `agent.https_proxy` / `agent.no_proxy`).
    pub image_pull_proxy: Option<ImagePullProxy>,
    /// PEM root certificates trusted for registries, in addition to the built-in ones.
    pub extra_root_certificates: Vec<String>,
    /// Ours: KBS resources (`kbs:///...`) holding PEM/DER private keys for JWE-wrapped
    /// layer keys (`skopeo --encryption-key jwe:...`). Provider-packet layers name their
    /// KBS key themselves (`kid`).
    pub decryption_key_uris: Vec<String>,
    /// Ours, test mode only: local private-key files. Refused unless the sample attester
    /// was asked for (`attester = "sample"`): the initrd is measured, not encrypted, so a
    /// key baked into it is no secret.
    pub test_decryption_key_files: Vec<PathBuf>,
    /// Upstream's signature policy keys. Not implemented: set, they make every pull fail
    /// (an image policy the agent cannot enforce must not be silently ignored).
    pub image_security_policy_uri: Option<String>,
    pub image_security_policy: Option<String>,
    pub sigstore_config_uri: Option<String>,
    pub sigstore_config: Option<String>,
}

/// `[image.image_pull_proxy]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagePullProxy {
    pub https_proxy: Option<String>,
    pub http_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            work_dir: PathBuf::from(wire::IMAGE_WORK_DIR),
            max_concurrent_layer_downloads_per_image: 3,
            registry_configuration_uri: None,
            registry_config: None,
            authenticated_registry_credentials_uri: None,
            image_pull_proxy: None,
            extra_root_certificates: Vec::new(),
            decryption_key_uris: Vec::new(),
            test_decryption_key_files: Vec::new(),
            image_security_policy_uri: None,
            image_security_policy: None,
            sigstore_config_uri: None,
            sigstore_config: None,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            log_level: LogLevel::Info,
            server_addr: ServerAddr::Vsock {
                cid: None,
                port: wire::AGENT_VSOCK_PORT,
            },
            log_vport: 0,
            debug_console: false,
            debug_console_vport: 0,
            dev_mode: false,
            tracing: false,
            hotplug_timeout: Duration::from_secs(3),
            image_pull_timeout: Duration::from_secs(1200),
            launch_process_timeout: Duration::from_secs(6),
            container_pipe_size: 0,
            guest_components_rest_api: RestApi::Resource,
            guest_components_procs: "api-server-rest".into(),
            secure_storage_integrity: false,
            https_proxy: String::new(),
            no_proxy: String::new(),
            unified_cgroup_hierarchy: false,
            cgroup_no_v1: String::new(),
            aa_kbc_params: None,
            kbs_cert_file: None,
            kbs_cert: None,
            kbs_deadline: Duration::from_secs(30),
            sealed_secret_verify: true,
            guest_components_rest_api_addr: std::net::SocketAddr::from((
                [127, 0, 0, 1],
                wire::WORKLOAD_API_PORT,
            )),
            attester: None,
            policy_file: None,
            initdata: None,
            image: ImageSettings::default(),
        }
    }
}

/// The longest timeout the configuration may set (one day): longer ones are clamped.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// A TOML string parsed with the type's `FromStr`.
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    String::deserialize(d)?
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// A configuration plus what was noticed while reading it, to log once logging is up.
#[derive(Debug)]
pub struct Loaded {
    pub config: AgentConfig,
    pub warnings: Vec<String>,
}

impl AgentConfig {
    /// Reads the configuration: `config_file` (from `--config`) if given, else the kernel
    /// command line `cmdline` (and the file it names); then `env` overrides.
    pub fn load(
        config_file: Option<&Path>,
        cmdline: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let mut config = match config_file {
            Some(path) => AgentConfig::from_file(path)?,
            None => AgentConfig::from_cmdline(cmdline, &mut warnings)?,
        };
        config.apply_env(env)?;
        config.bound_timeouts(&mut warnings);
        Ok(Loaded { config, warnings })
    }

    /// Clamps every timeout to [`MAX_TIMEOUT`], with a warning naming the key: a huge
    /// value (`agent.hotplug_timeout=18446744073709551615`) would otherwise overflow an
    /// `Instant` where it is added to the clock, and that panic powers the VM off.
    pub fn bound_timeouts(&mut self, warnings: &mut Vec<String>) {
        for (key, timeout) in [
            (keys::HOTPLUG_TIMEOUT, &mut self.hotplug_timeout),
            (keys::IMAGE_PULL_TIMEOUT, &mut self.image_pull_timeout),
            (
                keys::LAUNCH_PROCESS_TIMEOUT,
                &mut self.launch_process_timeout,
            ),
            ("kbs_deadline", &mut self.kbs_deadline),
        ] {
            if *timeout > MAX_TIMEOUT {
                warnings.push(format!(
                    "{key}={}s is above the maximum; using {}s",
                    timeout.as_secs(),
                    MAX_TIMEOUT.as_secs()
                ));
                *timeout = MAX_TIMEOUT;
            }
        }
    }

    /// Parses a TOML config file.
    pub fn from_file(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Parses the kernel command line: `agent.config_file=` first (as the base), then every
    /// other `agent.*` key on top.
    pub fn from_cmdline(
        cmdline: &str,
        warnings: &mut Vec<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let params: Vec<(&str, Option<&str>)> = cmdline
            .split_ascii_whitespace()
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            })
            .collect();

        let mut config = match params.iter().find(|(k, _)| *k == keys::CONFIG_FILE) {
            Some((_, Some(path))) if !path.is_empty() => AgentConfig::from_file(Path::new(path))?,
            Some(_) => return Err(invalid(keys::CONFIG_FILE, "", "expected a path")),
            None => AgentConfig::default(),
        };
        for (key, value) in params {
            config.set_cmdline_key(key, value, warnings)?;
        }
        Ok(config)
    }

    fn set_cmdline_key(
        &mut self,
        key: &str,
        value: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        use keys::*;
        match key {
            LOG => self.log_level = parse(LOG, value)?,
            SERVER_ADDR => self.server_addr = parse(SERVER_ADDR, value)?,
            LOG_VPORT => self.log_vport = port(LOG_VPORT, value)?,
            DEBUG_CONSOLE => self.debug_console = flag(DEBUG_CONSOLE, value)?,
            DEBUG_CONSOLE_VPORT => self.debug_console_vport = port(DEBUG_CONSOLE_VPORT, value)?,
            DEVMODE => self.dev_mode = flag(DEVMODE, value)?,
            TRACE => self.tracing = flag(TRACE, value)?,
            HOTPLUG_TIMEOUT => self.hotplug_timeout = secs(HOTPLUG_TIMEOUT, value)?,
            IMAGE_PULL_TIMEOUT => self.image_pull_timeout = secs(IMAGE_PULL_TIMEOUT, value)?,
            LAUNCH_PROCESS_TIMEOUT => {
                self.launch_process_timeout = secs(LAUNCH_PROCESS_TIMEOUT, value)?
            }
            CONTAINER_PIPE_SIZE => self.container_pipe_size = parse(CONTAINER_PIPE_SIZE, value)?,
            CONFIG_FILE => {} // handled first, in from_cmdline
            GUEST_COMPONENTS_REST_API => {
                self.guest_components_rest_api = parse(GUEST_COMPONENTS_REST_API, value)?
            }
            GUEST_COMPONENTS_PROCS => {
                self.guest_components_procs = string(GUEST_COMPONENTS_PROCS, value)?
            }
            SECURE_STORAGE_INTEGRITY => {
                self.secure_storage_integrity = flag(SECURE_STORAGE_INTEGRITY, value)?
            }
            HTTPS_PROXY => self.https_proxy = string(HTTPS_PROXY, value)?,
            NO_PROXY => self.no_proxy = string(NO_PROXY, value)?,
            UNIFIED_CGROUP_HIERARCHY => {
                self.unified_cgroup_hierarchy = flag(UNIFIED_CGROUP_HIERARCHY, value)?
            }
            SYSTEMD_UNIFIED_CGROUP_HIERARCHY => {
                self.unified_cgroup_hierarchy = flag(SYSTEMD_UNIFIED_CGROUP_HIERARCHY, value)?
            }
            CGROUP_NO_V1 => self.cgroup_no_v1 = string(CGROUP_NO_V1, value)?,
            AA_KBC_PARAMS => self.aa_kbc_params = Some(parse(AA_KBC_PARAMS, value)?),
            ATTESTER => self.attester = Some(parse(ATTESTER, value)?),
            POLICY_FILE => self.policy_file = Some(PathBuf::from(string(POLICY_FILE, value)?)),
            INITDATA => self.initdata = Some(PathBuf::from(string(INITDATA, value)?)),
            other if other.starts_with("agent.") => {
                warnings.push(format!("ignoring unknown kernel command-line key {other}"))
            }
            _ => {} // not ours: the kernel's or another program's
        }
        Ok(())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(addr) = env(keys::ENV_SERVER_ADDR) {
            self.server_addr = parse(keys::ENV_SERVER_ADDR, Some(&addr))?;
        }
        if let Some(level) = env(keys::ENV_LOG_LEVEL) {
            self.log_level = parse(keys::ENV_LOG_LEVEL, Some(&level))?;
        }
        if let Some(path) = env(keys::ENV_POLICY_FILE) {
            self.policy_file = Some(PathBuf::from(path));
        }
        Ok(())
    }
}

fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn string(key: &'static str, value: Option<&str>) -> Result<String, ConfigError> {
    value
        .map(str::to_string)
        .ok_or_else(|| invalid(key, "", "expected key=value"))
}

fn parse<T>(key: &'static str, value: Option<&str>) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let value = value.ok_or_else(|| invalid(key, "", "expected key=value"))?;
    value
        .parse()
        .map_err(|e: T::Err| invalid(key, value, e.to_string()))
}

/// A boolean switch: bare `key` is true; `key=true|false|1|0|yes|no|on|off`.
fn flag(key: &'static str, value: Option<&str>) -> Result<bool, ConfigError> {
    match value {
        None => Ok(true),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(v) => Err(invalid(key, v, "expected true or false")),
    }
}

fn port(key: &'static str, value: Option<&str>) -> Result<u32, ConfigError> {
    let port: u32 = parse(key, value)?;
    if port == 0 {
        return Err(invalid(key, "0", "a vsock port must be positive"));
    }
    Ok(port)
}

fn secs(key: &'static str, value: Option<&str>) -> Result<Duration, ConfigError> {
    let secs: u64 = parse(key, value)?;
    if secs == 0 {
        return Err(invalid(key, "0", "a timeout must be positive"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn cmdline(s: &str) -> Loaded {
        AgentConfig::load(None, s, no_env).unwrap()
    }

    #[test]
    fn defaults_match_upstream() {
        let c = cmdline("");
        assert_eq!(c.config.server_addr.uri(), "vsock://-1:1024");
        assert_eq!(c.config.log_level, LogLevel::Info);
        assert_eq!(c.config.hotplug_timeout, Duration::from_secs(3));
        assert_eq!(c.config.image_pull_timeout, Duration::from_secs(1200));
        assert_eq!(c.config.launch_process_timeout, Duration::from_secs(6));
        assert_eq!(c.config.guest_components_rest_api, RestApi::Resource);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn every_supported_key() {
        let c = cmdline(
            "console=ttyS0 quiet agent.log=debug agent.server_addr=vsock://3:2000 \
             agent.log_vport=1025 agent.debug_console agent.debug_console_vport=1026 \
             agent.devmode agent.trace=false agent.hotplug_timeout=10 \
             agent.image_pull_timeout=60 agent.launch_process_timeout=9 \
             agent.container_pipe_size=4096 agent.guest_components_rest_api=all \
             agent.guest_components_procs=none agent.secure_storage_integrity=true \
             agent.https_proxy=http://proxy:3128 agent.no_proxy=localhost \
             agent.aa_kbc_params=cc_kbc::http://10.0.2.2:8080 agent.attester=sample \
             cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1",
        );
        let c = c.config;
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(
            c.server_addr,
            ServerAddr::Vsock {
                cid: Some(3),
                port: 2000
            }
        );
        assert_eq!(c.log_vport, 1025);
        assert!(c.debug_console);
        assert_eq!(c.debug_console_vport, 1026);
        assert!(c.dev_mode);
        assert!(!c.tracing);
        assert_eq!(c.hotplug_timeout, Duration::from_secs(10));
        assert_eq!(c.image_pull_timeout, Duration::from_secs(60));
        assert_eq!(c.launch_process_timeout, Duration::from_secs(9));
        assert_eq!(c.container_pipe_size, 4096);
        assert_eq!(c.guest_components_rest_api, RestApi::All);
        assert_eq!(c.guest_components_procs, "none");
        assert!(c.secure_storage_integrity);
        assert_eq!(c.https_proxy, "http://proxy:3128");
        assert_eq!(c.no_proxy, "localhost");
        let kbc = c.aa_kbc_params.unwrap();
        assert_eq!(kbc.kbc, "cc_kbc");
        assert_eq!(kbc.url, "http://10.0.2.2:8080");
        assert_eq!(c.attester, Some(AttesterChoice::Sample));
        assert_eq!(c.cgroup_no_v1, "all");
        assert!(c.unified_cgroup_hierarchy);
    }

    #[test]
    fn unix_addresses() {
        let c = cmdline("agent.server_addr=unix:///tmp/a.sock");
        assert_eq!(c.config.server_addr, ServerAddr::Unix("/tmp/a.sock".into()));
        let c = cmdline("agent.server_addr=unix://@abstract");
        assert_eq!(c.config.server_addr.uri(), "unix://@abstract");
    }

    #[test]
    fn unknown_agent_keys_warn_and_are_ignored() {
        let c = cmdline("agent.frobnicate=1 agent.log=warn foo=bar");
        assert_eq!(c.config.log_level, LogLevel::Warn);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("agent.frobnicate"));
    }

    #[test]
    fn malformed_values_name_the_key() {
        for (line, key) in [
            ("agent.log=loud", "agent.log"),
            ("agent.log", "agent.log"),
            ("agent.server_addr=tcp://1.2.3.4:5", "agent.server_addr"),
            ("agent.server_addr=vsock://x:1024", "agent.server_addr"),
            ("agent.server_addr=unix://relative", "agent.server_addr"),
            ("agent.log_vport=0", "agent.log_vport"),
            ("agent.log_vport=abc", "agent.log_vport"),
            ("agent.hotplug_timeout=-3", "agent.hotplug_timeout"),
            ("agent.image_pull_timeout=0", "agent.image_pull_timeout"),
            ("agent.devmode=maybe", "agent.devmode"),
            ("agent.aa_kbc_params=http://kbs", "agent.aa_kbc_params"),
            (
                "agent.aa_kbc_params=cc_kbc::ftp://kbs",
                "agent.aa_kbc_params",
            ),
            (
                "agent.guest_components_rest_api=some",
                "agent.guest_components_rest_api",
            ),
            ("agent.config_file=", "agent.config_file"),
            ("agent.attester=smaple", "agent.attester"),
        ] {
            let err = AgentConfig::load(None, line, no_env).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(key), "{line}: {text}");
        }
    }

    #[test]
    fn env_overrides_cmdline() {
        let env = |k: &str| match k {
            keys::ENV_SERVER_ADDR => Some("unix:///run/x.sock".to_string()),
            keys::ENV_LOG_LEVEL => Some("trace".to_string()),
            keys::ENV_POLICY_FILE => Some("/etc/p.rego".to_string()),
            _ => None,
        };
        let c = AgentConfig::load(None, "agent.log=info agent.server_addr=vsock://-1:9", env)
            .unwrap()
            .config;
        assert_eq!(c.server_addr.uri(), "unix:///run/x.sock");
        assert_eq!(c.log_level, LogLevel::Trace);
        assert_eq!(c.policy_file, Some(PathBuf::from("/etc/p.rego")));

        let bad = |k: &str| (k == keys::ENV_LOG_LEVEL).then(|| "shouty".to_string());
        let err = AgentConfig::load(None, "", bad).unwrap_err();
        assert!(err.to_string().contains("KATA_AGENT_LOG_LEVEL"));
    }

    #[test]
    fn toml_file_then_cmdline_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            r#"
            log_level = "debug"
            server_addr = "unix:///tmp/file.sock"
            hotplug_timeout = 7
            dev_mode = true
            aa_kbc_params = "cc_kbc::http://127.0.0.1:8080"
            "#,
        )
        .unwrap();

        // --config FILE: the file alone (cmdline ignored), env on top.
        let c = AgentConfig::load(Some(&path), "agent.log=error", no_env)
            .unwrap()
            .config;
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.server_addr.uri(), "unix:///tmp/file.sock");
        assert_eq!(c.hotplug_timeout, Duration::from_secs(7));
        assert!(c.dev_mode);
        assert_eq!(c.aa_kbc_params.unwrap().url, "http://127.0.0.1:8080");

        // agent.config_file= on the cmdline: file as base, other keys override.
        let line = format!("agent.log=error agent.config_file={}", path.display());
        let c = AgentConfig::load(None, &line, no_env).unwrap().config;
        assert_eq!(c.log_level, LogLevel::Error);
        assert_eq!(c.hotplug_timeout, Duration::from_secs(7));

        let env = |k: &str| (k == keys::ENV_LOG_LEVEL).then(|| "trace".to_string());
        let c = AgentConfig::load(Some(&path), "", env).unwrap().config;
        assert_eq!(c.log_level, LogLevel::Trace);
    }

    #[test]
    fn huge_timeouts_are_clamped_with_a_warning() {
        let huge = u64::MAX;
        let c = cmdline(&format!(
            "agent.hotplug_timeout={huge} agent.image_pull_timeout={huge} \
             agent.launch_process_timeout={huge}"
        ));
        assert_eq!(c.config.hotplug_timeout, MAX_TIMEOUT);
        assert_eq!(c.config.image_pull_timeout, MAX_TIMEOUT);
        assert_eq!(c.config.launch_process_timeout, MAX_TIMEOUT);
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("agent.hotplug_timeout"),
            "{:?}",
            c.warnings
        );
        // The clamped value can be added to the clock.
        assert!(std::time::Instant::now()
            .checked_add(c.config.hotplug_timeout)
            .is_some());

        // The same through a TOML file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "hotplug_timeout = {}\nkbs_deadline = {}\n",
                i64::MAX,
                i64::MAX
            ),
        )
        .unwrap();
        let c = AgentConfig::load(Some(&path), "", no_env).unwrap();
        assert_eq!(c.config.hotplug_timeout, MAX_TIMEOUT);
        assert_eq!(c.config.kbs_deadline, MAX_TIMEOUT);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);

        // A value at the bound is kept, silently.
        let c = cmdline(&format!("agent.hotplug_timeout={}", MAX_TIMEOUT.as_secs()));
        assert_eq!(c.config.hotplug_timeout, MAX_TIMEOUT);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn bad_toml_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "log_level = \"loud\"\n").unwrap();
        let err = AgentConfig::load(Some(&path), "", no_env).unwrap_err();
        assert!(err.to_string().contains("agent.toml"), "{err}");

        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let err = AgentConfig::load(Some(&path), "", no_env).unwrap_err();
        assert!(err.to_string().contains("no_such_key"), "{err}");

        let missing = dir.path().join("missing.toml");
        let err = AgentConfig::load(Some(&missing), "", no_env).unwrap_err();
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }
}
