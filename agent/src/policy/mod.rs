//! The Kata agent policy: Rego (package `agent_policy`) evaluated in-process with
//! `regorus`, in upstream kata-agent's format, so policies made by Kata's `genpolicy`
//! work unchanged.
//!
//! - Every request is checked before it acts, by the rule named like its message
//!   (`CreateContainerRequest`, `ReadStreamRequest`, ...), with the request as `input`
//!   in upstream's JSON shape ([`input`]).
//! - A rule gives a bool, or `{"allowed": bool, "ops": [...]}` where `ops` is a JSON patch
//!   applied to `data` (upstream keeps the policy's state under `data.pstate`) when the
//!   request is allowed.
//! - A denial carries the policy's `print` output: `"<Request> is blocked by policy:
//!   <prints>"`. Anything that goes wrong while evaluating is a denial too, never an allow
//!   (unless the policy itself sets upstream's debugging switch
//!   `AllowRequestsFailingPolicy`).
//! - A request the policy allows is answered by its compiled copy when it has one
//!   (regorus' bytecode VM, the `print` statements dropped: `compiled.rs`); the
//!   interpreter decides everything else, and so explains every denial.
//! - `SetPolicy` is checked by the current policy, and the new one replaces it only once
//!   it has loaded: atomically, under the same lock, so no request sees a half-set policy.
//!
//! Which policy applies at start-up ([`Policy::startup`]): the file named by
//! `agent.policy_file` / `policy_file` / `KATA_AGENT_POLICY_FILE`; else, in a confidential
//! guest, the built-in `default.rego`; else (no TEE: development) allow-all. A file that
//! does not load is fatal.

mod compiled;
pub mod input;

use std::path::Path;
use std::sync::Mutex;

use protobuf::MessageFull;
use regorus::Engine;
use serde::Serialize;
use serde_json::Value as Json;

pub use input::{FileType, InputError, PolicyCopyFileRequest};

/// The built-in policy of a confidential guest.
pub const DEFAULT_CONFIDENTIAL: &str = include_str!("default.rego");

/// Environment variable that applies the confidential default without a TEE (tests
/// only). It can only make the agent stricter.
pub const ENV_FORCE_CONFIDENTIAL: &str = "COCOON_POLICY_CONFIDENTIAL";

/// Generated policies are large (genpolicy's rules plus the pod's data, long env
/// values on one line): regorus' defaults (1024 columns, 1 MiB, 20 000 lines) are too
/// small for real ones.
const MAX_COLUMNS: u32 = 64 * 1024;
const MAX_BYTES: usize = 16 * 1024 * 1024;
const MAX_LINES: usize = 200_000;
/// Compiled regexes kept across evaluations.
const REGEX_CACHE: usize = 2048;

/// Every method of `grpc.AgentService` and the rule that checks it: its request
/// message's name (ReadStdout and ReadStderr share `ReadStreamRequest`).
pub const METHODS: &[(&str, &str)] = &[
    ("CreateContainer", "CreateContainerRequest"),
    ("StartContainer", "StartContainerRequest"),
    ("RemoveContainer", "RemoveContainerRequest"),
    ("ExecProcess", "ExecProcessRequest"),
    ("SignalProcess", "SignalProcessRequest"),
    ("WaitProcess", "WaitProcessRequest"),
    ("UpdateContainer", "UpdateContainerRequest"),
    ("UpdateEphemeralMounts", "UpdateEphemeralMountsRequest"),
    ("StatsContainer", "StatsContainerRequest"),
    ("PauseContainer", "PauseContainerRequest"),
    ("ResumeContainer", "ResumeContainerRequest"),
    (
        "RemoveStaleVirtiofsShareMounts",
        "RemoveStaleVirtiofsShareMountsRequest",
    ),
    ("GetDiagnosticData", "GetDiagnosticDataRequest"),
    ("WriteStdin", "WriteStreamRequest"),
    ("ReadStdout", "ReadStreamRequest"),
    ("ReadStderr", "ReadStreamRequest"),
    ("CloseStdin", "CloseStdinRequest"),
    ("TtyWinResize", "TtyWinResizeRequest"),
    ("UpdateInterface", "UpdateInterfaceRequest"),
    ("UpdateRoutes", "UpdateRoutesRequest"),
    ("ListInterfaces", "ListInterfacesRequest"),
    ("ListRoutes", "ListRoutesRequest"),
    ("AddARPNeighbors", "AddARPNeighborsRequest"),
    ("GetIPTables", "GetIPTablesRequest"),
    ("SetIPTables", "SetIPTablesRequest"),
    ("GetMetrics", "GetMetricsRequest"),
    ("MemAgentMemcgSet", "MemAgentMemcgConfig"),
    ("MemAgentCompactSet", "MemAgentCompactConfig"),
    ("CreateSandbox", "CreateSandboxRequest"),
    ("DestroySandbox", "DestroySandboxRequest"),
    ("OnlineCPUMem", "OnlineCPUMemRequest"),
    ("ReseedRandomDev", "ReseedRandomDevRequest"),
    ("GetGuestDetails", "GuestDetailsRequest"),
    ("MemHotplugByProbe", "MemHotplugByProbeRequest"),
    ("SetGuestDateTime", "SetGuestDateTimeRequest"),
    ("CopyFile", "CopyFileRequest"),
    ("GetOOMEvent", "GetOOMEventRequest"),
    ("AddSwap", "AddSwapRequest"),
    ("AddSwapPath", "AddSwapPathRequest"),
    ("GetVolumeStats", "VolumeStatsRequest"),
    ("ResizeVolume", "ResizeVolumeRequest"),
    ("SetPolicy", "SetPolicyRequest"),
];

/// The rule names: the distinct request messages of [`METHODS`].
pub fn rule_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = METHODS.iter().map(|(_, rule)| *rule).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy {origin} does not load: {reason}")]
    Load { origin: String, reason: String },
}

/// A request the policy did not allow. Its text is the ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule} is blocked by policy: {reason}")]
pub struct Denied {
    pub rule: String,
    /// The policy's print output, or what went wrong evaluating it.
    pub reason: String,
}

impl From<Denied> for ttrpc::Error {
    fn from(d: Denied) -> Self {
        crate::rpc::status(ttrpc::Code::PERMISSION_DENIED, d.to_string())
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy's `print` output, joined by spaces (as upstream does).
    pub prints: String,
}

/// A loaded policy: one engine with the rules and `data` (the state), behind a lock;
/// and, when the policy allows it, its compiled copy (the fast path for allows, with its
/// own copy of `data`: see [`compiled`]).
struct Loaded {
    engine: Engine,
    fast: Option<compiled::Compiled>,
    origin: String,
    /// Upstream's debugging switch: the policy's `AllowRequestsFailingPolicy` is true.
    allow_failures: bool,
    /// [`allow_all_rego`], answered natively: every rule it defines is `true`, without
    /// building an engine at start-up (its compile was most of the time to serving).
    allow_all: bool,
}

/// The agent's policy. Cheap to share (`Arc`); evaluations are serialised (the state
/// changes with each allowed request that returns `ops`).
pub struct Policy {
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("origin", &self.origin())
            .finish()
    }
}

/// Whether the guest is confidential for the policy's defaults: a TEE was found (even
/// when the sample attester was chosen instead), or signs of one that do not add up;
/// only "no TEE at all" counts as not confidential (fail closed). `force` is
/// [`ENV_FORCE_CONFIDENTIAL`] (tests).
pub fn is_confidential(probe: &cocoon_attester::Probe, force: bool) -> bool {
    use cocoon_attester::Verdict;
    force
        || !matches!(
            probe.verdict,
            Verdict::NoTee | Verdict::Sample { hardware: None }
        )
}

/// [`ENV_FORCE_CONFIDENTIAL`] is set to `1`.
pub fn forced_confidential() -> bool {
    std::env::var(ENV_FORCE_CONFIDENTIAL).is_ok_and(|v| v == "1")
}

/// Rego that allows every request (no TEE: development; upstream's `allow-all.rego`).
pub fn allow_all_rego() -> String {
    let mut text = String::from("package agent_policy\n\n");
    for name in rule_names() {
        text.push_str(&format!("default {name} := true\n"));
    }
    text
}

/// Where [`hoist_policy_data`] puts genpolicy's data document (outside the package).
const HOISTED_KEY: &str = "cocoon_policy_data";

/// genpolicy ends a policy with `policy_data := {...}`, one JSON literal of the pod's
/// data (tens of kB). regorus builds a rule's literal anew on every evaluation (some
/// 50 µs for a small pod, on every request); as data it costs nothing. When the policy
/// ends with such a statement whose right side is plain JSON (so its value is exactly
/// that JSON), the rule becomes `policy_data := data.cocoon_policy_data` and the JSON is
/// returned to be added as that data. Anything else is left as it is.
fn hoist_policy_data(text: &str) -> (std::borrow::Cow<'_, str>, Option<Json>) {
    const RULE: &str = "\npolicy_data := ";
    let Some(at) = text.rfind(RULE) else {
        return (text.into(), None);
    };
    let literal = &text[at + RULE.len()..];
    match serde_json::from_str::<Json>(literal) {
        Ok(value @ Json::Object(_)) => {
            let rewritten = format!("{}{RULE}data.{HOISTED_KEY}\n", &text[..at]);
            (rewritten.into(), Some(value))
        }
        _ => (text.into(), None),
    }
}

/// The package every agent policy is in.
const PACKAGE: &str = "data.agent_policy";

/// regorus' settings for our policies (interpreter and compiled copy alike).
fn configure(engine: &mut Engine) -> Result<(), String> {
    // Rego v1, regorus' default and so upstream's (genpolicy's rules import
    // `future.keywords`, which v1 accepts).
    engine.set_strict_builtin_errors(false);
    // Prints are gathered only when asked for (see `eval`); without regorus' `std`
    // feature an ungathered print costs nothing (with it, it goes to stderr).
    engine.set_gather_prints(false);
    let (Some(cols), Some(bytes), Some(lines)) = (
        std::num::NonZeroU32::new(MAX_COLUMNS),
        std::num::NonZeroUsize::new(MAX_BYTES),
        std::num::NonZeroUsize::new(MAX_LINES),
    ) else {
        return Err("bad length limits".to_string());
    };
    engine.set_policy_length_config(regorus::PolicyLengthConfig {
        max_col: cols,
        max_file_bytes: bytes,
        max_lines: lines,
    });
    Ok(())
}

/// The compiled copy of the policy in `engine` (made of `texts`, hoisted), or why there
/// is none.
fn compile_fast(
    engine: &mut Engine,
    texts: &[(String, String)],
    data: &Json,
) -> Result<compiled::Compiled, String> {
    let modules = engine.get_modules().clone();
    let constants = compiled::constant_rules(&modules, &[HOISTED_KEY]);
    let bodies: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
    let stripped = compiled::without_prints(&modules, &bodies, &constants)?;
    tracing::debug!(
        prints = stripped.prints,
        "policy: compiled copy without its prints"
    );
    let named: Vec<(String, String)> = texts
        .iter()
        .map(|(name, _)| name.clone())
        .zip(stripped.texts)
        .collect();
    compiled::Compiled::new(
        &named,
        PACKAGE,
        &rule_names(),
        regorus::Value::from(data.clone()),
        configure,
    )
}

fn load_error(origin: &str, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Load {
        origin: origin.to_string(),
        reason: e.to_string(),
    }
}

impl Loaded {
    /// Parses `modules` (name, text) into a fresh engine with empty state, and makes sure
    /// the result can be evaluated: a policy that cannot is refused now, not at the
    /// first request.
    fn new(origin: &str, modules: &[(&str, &str)]) -> Result<Loaded, PolicyError> {
        // Compiled regexes are kept across evaluations (genpolicy's rules build their
        // patterns per container and mount: more than regorus' default 256).
        regorus::cache::configure(regorus::cache::Config {
            regex: REGEX_CACHE,
            glob: 0,
        });
        let mut engine = Engine::new();
        configure(&mut engine).map_err(|e| load_error(origin, e))?;
        let mut data = serde_json::json!({ "pstate": {} });
        let mut texts = Vec::with_capacity(modules.len());
        for (name, text) in modules {
            let (text, hoisted) = hoist_policy_data(text);
            if let Some(value) = hoisted {
                if let Some(d) = data.as_object_mut() {
                    d.insert(HOISTED_KEY.to_owned(), value);
                }
            }
            let text = text.into_owned();
            let package = engine
                .add_policy(name.to_string(), text.clone())
                .map_err(|e| load_error(origin, format!("{e:#}")))?;
            texts.push((name.to_string(), text));
            if package != PACKAGE {
                return Err(load_error(
                    origin,
                    format!("package {package}: expected package agent_policy"),
                ));
            }
        }
        engine
            .add_data(regorus::Value::from(data.clone()))
            .map_err(|e| load_error(origin, format!("{e:#}")))?;
        // Compiles the policy (a broken one fails here, not at the first request) and
        // reads upstream's debugging switch; undefined is false.
        let switch = engine
            .eval_query(
                "data.agent_policy.AllowRequestsFailingPolicy".to_string(),
                false,
            )
            .map_err(|e| load_error(origin, format!("{e:#}")))?;
        let _ = engine.take_prints();
        let allow_failures = switch
            .result
            .first()
            .and_then(|r| r.expressions.first())
            .is_some_and(|e| e.value == regorus::Value::Bool(true));
        // The policy is valid: now its compiled copy, if it can have one (a policy
        // without works all the same, on the interpreter alone).
        let fast = match compile_fast(&mut engine, &texts, &data) {
            Ok(fast) => Some(fast),
            Err(reason) => {
                tracing::info!(
                    policy = origin,
                    reason,
                    "policy: no compiled copy, every request is evaluated by the interpreter"
                );
                None
            }
        };
        let loaded = Loaded {
            engine,
            fast,
            origin: origin.to_string(),
            allow_failures,
            allow_all: false,
        };
        Ok(loaded)
    }

    /// Evaluates `rule` once; with `gather`, also returns its print output.
    fn run(&mut self, rule: &str, gather: bool) -> (Result<regorus::Value, String>, String) {
        self.engine.set_gather_prints(gather);
        let value = self
            .engine
            .eval_rule(format!("data.agent_policy.{rule}"))
            .map_err(|e| format!("evaluating {rule}: {e:#}"));
        let prints = if gather {
            match self.engine.take_prints() {
                Ok(p) => p.join(" "),
                Err(e) => format!("(print output lost: {e})"),
            }
        } else {
            String::new()
        };
        self.engine.set_gather_prints(false);
        (value, prints)
    }

    /// The compiled copy's verdict on `input` when it is "allowed" (with its ops); `None`
    /// for anything else (denied, undefined, an error, no compiled copy): then the
    /// interpreter decides.
    fn fast_allow(
        &mut self,
        rule: &str,
        input: &regorus::Value,
    ) -> Option<Option<json_patch::Patch>> {
        let fast = self.fast.as_mut()?;
        match fast.eval(&format!("{PACKAGE}.{rule}"), input.clone())? {
            Ok(value) => match verdict(rule, &value) {
                Ok((true, ops)) => Some(ops),
                _ => None,
            },
            Err(e) => {
                tracing::debug!(rule, error = e, "policy: compiled copy failed");
                None
            }
        }
    }

    /// Evaluates `rule` on `input`; `Err` says what went wrong (a denial to callers).
    ///
    /// The compiled copy answers first ([`compiled`]): when it allows, that is the
    /// verdict. Otherwise the interpreter decides. Formatting prints is most of the
    /// interpreter's cost on genpolicy's rules (they print the whole input many times):
    /// with [`Prints::OnDenial`] and a compiled copy, the interpreter runs once, with
    /// prints; without a compiled copy, first without them, and a denial is evaluated
    /// again with them for its message (same input and state: same verdict).
    fn eval(&mut self, rule: &str, input: Json, prints: Prints) -> Result<Decision, String> {
        if self.allow_all {
            // As the Rego would answer: defined rules are true, others undefined.
            return if METHODS.iter().any(|(_, r)| *r == rule) {
                Ok(Decision {
                    allowed: true,
                    prints: String::new(),
                })
            } else {
                Err(format!("{rule} is undefined in the policy"))
            };
        }
        let input = regorus::Value::from(input);
        if prints != Prints::Always {
            if let Some(ops) = self.fast_allow(rule, &input) {
                if let Some(ops) = ops.filter(|o| !o.0.is_empty()) {
                    self.apply(&ops)
                        .map_err(|e| format!("applying {rule}'s ops: {e}"))?;
                }
                return Ok(Decision {
                    allowed: true,
                    prints: String::new(),
                });
            }
        }
        // The compiled copy did not allow (or was not asked): likely a denial, so the
        // prints are gathered at once when they will be wanted.
        let gather_first =
            prints == Prints::Always || (prints == Prints::OnDenial && self.fast.is_some());
        self.engine.set_input(input);
        let (value, mut printed) = self.run(rule, gather_first);
        let verdict = value.and_then(|v| verdict(rule, &v));
        if prints == Prints::OnDenial && !gather_first && !matches!(verdict, Ok((true, _))) {
            printed = self.run(rule, true).1;
        }
        if prints != Prints::Always && self.fast.is_some() && matches!(verdict, Ok((true, _))) {
            // The compiled copy and the interpreter disagree: the interpreter decides.
            tracing::warn!(
                rule,
                "policy: the interpreter allows what the compiled copy did not"
            );
        }
        let (allowed, ops) = verdict.map_err(|e| join(e, &printed))?;
        if allowed {
            if let Some(ops) = ops.filter(|o| !o.0.is_empty()) {
                self.apply(&ops)
                    .map_err(|e| join(format!("applying {rule}'s ops: {e}"), &printed))?;
            }
        }
        Ok(Decision {
            allowed,
            prints: printed,
        })
    }

    /// Applies a JSON patch to `data` (the interpreter's and the compiled copy's): all of
    /// it or, on any error, nothing.
    fn apply(&mut self, ops: &json_patch::Patch) -> Result<(), String> {
        let mut data = serde_json::to_value(self.engine.get_data()).map_err(|e| e.to_string())?;
        json_patch::patch(&mut data, ops).map_err(|e| e.to_string())?;
        let data = regorus::Value::from(data);
        self.engine.clear_data();
        self.engine
            .add_data(data.clone())
            .map_err(|e| format!("{e:#}"))?;
        if let Some(fast) = &mut self.fast {
            if let Err(e) = fast.set_data(data) {
                // Never a stale copy: without it, the interpreter decides everything.
                tracing::warn!(error = e, "policy: compiled copy dropped");
                self.fast = None;
            }
        }
        Ok(())
    }
}

/// When a caller wants the policy's print output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prints {
    /// Only to explain a denial (the request path).
    OnDenial,
    /// Never (ReadStdout/ReadStderr: a denial only withholds the data).
    Never,
    /// Always (tests, debugging).
    Always,
}

/// A rule's value as a verdict: a bool, or `{allowed, ops}`.
fn verdict(
    rule: &str,
    value: &regorus::Value,
) -> Result<(bool, Option<json_patch::Patch>), String> {
    match value {
        regorus::Value::Bool(b) => Ok((*b, None)),
        regorus::Value::Undefined => Err(format!("{rule} is undefined in the policy")),
        regorus::Value::Object(_) => {
            let json = serde_json::to_value(value).map_err(|e| format!("{rule}'s result: {e}"))?;
            let allowed = json
                .get("allowed")
                .and_then(Json::as_bool)
                .ok_or_else(|| format!("{rule}'s result has no boolean `allowed`"))?;
            let ops = match json.get("ops").unwrap_or(&Json::Null) {
                Json::Null => None,
                ops => Some(
                    serde_json::from_value::<json_patch::Patch>(ops.clone())
                        .map_err(|e| format!("{rule}'s ops are not a JSON patch: {e}"))?,
                ),
            };
            Ok((allowed, ops))
        }
        other => Err(format!(
            "{rule} gave {other}, not a bool or {{allowed, ops}}"
        )),
    }
}

fn join(what: String, prints: &str) -> String {
    if prints.is_empty() {
        what
    } else {
        format!("{what}; policy output: {prints}")
    }
}

impl Policy {
    /// A policy from Rego text (one module, package `agent_policy`).
    pub fn from_rego(origin: &str, rego: &str) -> Result<Policy, PolicyError> {
        Ok(Policy::wrap(Loaded::new(origin, &[(origin, rego)])?))
    }

    /// Reads a policy file.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::from_rego(&path.display().to_string(), &text)
    }

    /// Allows everything (no TEE).
    pub fn allow_all() -> Result<Policy, PolicyError> {
        Ok(Policy::wrap(Loaded {
            engine: Engine::new(),
            fast: None,
            origin: "allow-all (no TEE)".to_owned(),
            allow_failures: false,
            allow_all: true,
        }))
    }

    /// The built-in confidential default, for an agent whose pod tree is `run_dir`
    /// (`/run/kata-containers`).
    pub fn confidential_default(run_dir: &Path) -> Result<Policy, PolicyError> {
        let origin = "built-in confidential default";
        let dir = run_dir
            .to_str()
            .ok_or_else(|| load_error(origin, format!("{} is not UTF-8", run_dir.display())))?;
        let dir =
            serde_json::to_string(dir.trim_end_matches('/')).map_err(|e| load_error(origin, e))?;
        let paths = format!("package agent_policy\n\nkata_run_dir := {dir}\n");
        Ok(Policy::wrap(Loaded::new(
            origin,
            &[
                ("default.rego", DEFAULT_CONFIDENTIAL),
                ("paths.rego", &paths),
            ],
        )?))
    }

    /// The start-up policy: `file` if given; else the confidential default when
    /// `confidential`; else allow-all.
    pub fn startup(
        file: Option<&Path>,
        confidential: bool,
        run_dir: &Path,
    ) -> Result<Policy, PolicyError> {
        match file {
            Some(path) => Policy::from_file(path),
            None if confidential => Policy::confidential_default(run_dir),
            None => Policy::allow_all(),
        }
    }

    fn wrap(loaded: Loaded) -> Policy {
        if loaded.allow_failures {
            tracing::warn!(
                policy = loaded.origin,
                "policy: AllowRequestsFailingPolicy is set: denials are ignored"
            );
        }
        Policy {
            loaded: Mutex::new(loaded),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        // A panic while evaluating leaves the engine as it was before the request (the
        // state changes only in `apply`, all at once): keep using it.
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the policy in force has a compiled copy (the fast path for allows).
    pub fn is_compiled(&self) -> bool {
        let loaded = self.lock();
        loaded.fast.is_some() || loaded.allow_all
    }

    /// Where the policy in force came from.
    pub fn origin(&self) -> String {
        self.lock().origin.clone()
    }

    /// Evaluates `rule` on `input` as it is, with the print output (tests, debugging).
    pub fn evaluate(&self, rule: &str, input: Json) -> Result<Decision, Denied> {
        let mut loaded = self.lock();
        decide(&mut loaded, rule, input, Prints::Always)
    }

    /// Checks `input` against `rule`: `Ok` to go on, else why not.
    pub fn check_input(&self, rule: &str, input: Json) -> Result<(), Denied> {
        self.check_input_with(rule, input, Prints::OnDenial)
    }

    fn check_input_with(&self, rule: &str, input: Json, prints: Prints) -> Result<(), Denied> {
        let d = decide(&mut self.lock(), rule, input, prints)?;
        if d.allowed {
            Ok(())
        } else {
            Err(Denied {
                rule: rule.to_string(),
                reason: d.prints,
            })
        }
    }

    /// Checks a request by its message name, in upstream's JSON shape.
    pub fn check<M: MessageFull + Serialize>(&self, req: &M) -> Result<(), Denied> {
        let rule = input::rule_name::<M>();
        let input = input::request(&rule, req).map_err(|e| Denied {
            rule: rule.clone(),
            reason: e.to_string(),
        })?;
        self.check_input(&rule, input)
    }

    /// ReadStdout/ReadStderr (called in a loop): whether the output may be returned. No
    /// print output is formatted.
    pub fn allows_stream_read(&self, req: &cocoon_protocols::agent::ReadStreamRequest) -> bool {
        let rule = input::rule_name::<cocoon_protocols::agent::ReadStreamRequest>();
        match input::request(&rule, req) {
            Ok(input) => self.check_input_with(&rule, input, Prints::Never).is_ok(),
            Err(_) => false,
        }
    }

    /// CopyFile, checked as upstream's `PolicyCopyFileRequest`.
    pub fn check_copy_file(
        &self,
        req: &cocoon_protocols::agent::CopyFileRequest,
    ) -> Result<(), Denied> {
        let rule = "CopyFileRequest";
        let denied = |reason: String| Denied {
            rule: rule.to_string(),
            reason,
        };
        let p = PolicyCopyFileRequest::try_from(req).map_err(|e| denied(e.to_string()))?;
        let input = serde_json::to_value(&p).map_err(|e| denied(e.to_string()))?;
        self.check_input(rule, input)
    }

    /// SetPolicy: allowed by the policy in force, then the new policy replaces it whole
    /// (with fresh state). A new policy that does not load leaves the old one in force.
    pub fn set_policy(
        &self,
        req: &cocoon_protocols::agent::SetPolicyRequest,
    ) -> Result<(), SetPolicyError> {
        let rule = input::rule_name::<cocoon_protocols::agent::SetPolicyRequest>();
        let input = input::request(&rule, req).map_err(|e| {
            SetPolicyError::Denied(Denied {
                rule: rule.clone(),
                reason: e.to_string(),
            })
        })?;
        let mut loaded = self.lock();
        let d =
            decide(&mut loaded, &rule, input, Prints::OnDenial).map_err(SetPolicyError::Denied)?;
        if !d.allowed {
            return Err(SetPolicyError::Denied(Denied {
                rule,
                reason: d.prints,
            }));
        }
        let new = Loaded::new("SetPolicy", &[("SetPolicy", &req.policy)])
            .map_err(SetPolicyError::Invalid)?;
        if new.allow_failures {
            tracing::warn!("policy: AllowRequestsFailingPolicy is set: denials are ignored");
        }
        *loaded = new;
        tracing::info!("policy replaced by SetPolicy");
        Ok(())
    }
}

/// Evaluates, turning errors into denials (or allows, under `AllowRequestsFailingPolicy`).
fn decide(
    loaded: &mut Loaded,
    rule: &str,
    input: Json,
    prints: Prints,
) -> Result<Decision, Denied> {
    match loaded.eval(rule, input, prints) {
        Ok(d) if !d.allowed && loaded.allow_failures => {
            tracing::warn!(
                rule,
                "policy: ignoring a denial (AllowRequestsFailingPolicy)"
            );
            Ok(Decision {
                allowed: true,
                prints: d.prints,
            })
        }
        Ok(d) => Ok(d),
        Err(reason) if loaded.allow_failures => {
            tracing::warn!(
                rule,
                reason,
                "policy: ignoring an error (AllowRequestsFailingPolicy)"
            );
            Ok(Decision {
                allowed: true,
                prints: reason,
            })
        }
        Err(reason) => Err(Denied {
            rule: rule.to_string(),
            reason,
        }),
    }
}

/// Why SetPolicy failed.
#[derive(Debug, thiserror::Error)]
pub enum SetPolicyError {
    #[error(transparent)]
    Denied(Denied),
    #[error(transparent)]
    Invalid(PolicyError),
}

impl From<SetPolicyError> for ttrpc::Error {
    fn from(e: SetPolicyError) -> Self {
        match e {
            SetPolicyError::Denied(d) => d.into(),
            SetPolicyError::Invalid(e) => {
                crate::rpc::status(ttrpc::Code::INVALID_ARGUMENT, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests;
