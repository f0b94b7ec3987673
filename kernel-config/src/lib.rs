//! `kernel-config`: the guest kernel's configuration, as fragments and a checker.
//!
//! Owns the config fragments in `fragments/` (base, confidential, debug; embedded in the
//! binary), a parser for kernel `.config` files and fragments, `check` (what a `.config`
//! lacks or gets wrong against chosen fragments, distinguishing built-in `y` from module
//! `m`), `modules` (which modules an initrd must ship for that config) and a textual
//! `merge` like `scripts/kconfig/merge_config.sh`.
//!
//! Format: Kconfig's `.config` (<https://docs.kernel.org/kbuild/kconfig.html>): lines
//! `CONFIG_X=value` or `# CONFIG_X is not set`; anything else is a comment.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Fragments shipped with the crate: (name, text).
pub const FRAGMENTS: &[(&str, &str)] = &[
    ("base", include_str!("../fragments/base.conf")),
    (
        "confidential",
        include_str!("../fragments/confidential.conf"),
    ),
    ("debug", include_str!("../fragments/debug.conf")),
    ("builtin", include_str!("../fragments/builtin.conf")),
    ("trim", include_str!("../fragments/trim.conf")),
];

/// Fragments checked when none are named.
pub const DEFAULT_FRAGMENTS: &[&str] = &["base", "confidential"];

/// The value of one option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Yes,
    Module,
    No,
    /// A string (with its quotes) or number.
    Other(String),
}

impl Value {
    fn parse(s: &str) -> Self {
        match s {
            "y" => Value::Yes,
            "m" => Value::Module,
            "n" => Value::No,
            other => Value::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::No => f.write_str("n"),
            Value::Other(s) => f.write_str(s),
        }
    }
}

/// One line of a `.config` or fragment.
fn parse_line(line: &str) -> Option<(String, Value, Option<String>)> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# ") {
        let sym = rest.strip_suffix(" is not set")?;
        return sym
            .starts_with("CONFIG_")
            .then(|| (sym.to_string(), Value::No, None));
    }
    if !line.starts_with("CONFIG_") {
        return None;
    }
    let (sym, rest) = line.split_once('=')?;
    // A trailing `# module: NAME` annotation (fragments only). Strings may contain '#'.
    let (value, note) = match rest.find(" #") {
        Some(i) if !rest.starts_with('"') => (rest[..i].trim(), Some(rest[i + 2..].trim())),
        _ => (rest.trim(), None),
    };
    let module = note
        .and_then(|n| n.strip_prefix("module:"))
        .map(|m| m.trim().to_string());
    Some((sym.trim().to_string(), Value::parse(value), module))
}

/// A parsed kernel `.config`: symbol -> value. Absent symbols are not in the map.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: BTreeMap<String, Value>,
}

impl Config {
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter_map(parse_line)
            .map(|(s, v, _)| (s, v))
            .collect();
        Self { values }
    }

    pub fn get(&self, sym: &str) -> Option<&Value> {
        self.values.get(sym)
    }

    /// Sets options from a fragment (later fragments win), as `merge_config.sh` does
    /// before `make olddefconfig` resolves dependencies.
    pub fn apply(&mut self, frag: &Fragment) {
        for r in &frag.requirements {
            self.values.insert(r.symbol.clone(), r.want.clone());
        }
    }

    /// Writes the config back in `.config` syntax, sorted by symbol.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (sym, v) in &self.values {
            match v {
                Value::No => s.push_str(&format!("# {sym} is not set\n")),
                v => s.push_str(&format!("{sym}={v}\n")),
            }
        }
        s
    }
}

/// One requirement of a fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub symbol: String,
    pub want: Value,
    /// The module that provides the option, when built as a module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// A named list of requirements.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub name: String,
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    #[error("unknown fragment {0:?} (built in: base, confidential, debug; or give a file path)")]
    Unknown(String),
    #[error("reading fragment {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

impl Fragment {
    pub fn parse(name: &str, text: &str) -> Self {
        let requirements = text
            .lines()
            .filter_map(parse_line)
            .map(|(symbol, want, module)| Requirement {
                symbol,
                want,
                module,
            })
            .collect();
        Self {
            name: name.to_string(),
            requirements,
        }
    }

    /// A built-in fragment by name, or a fragment file by path.
    pub fn load(name_or_path: &str) -> Result<Self, FragmentError> {
        if let Some((name, text)) = FRAGMENTS.iter().find(|(n, _)| *n == name_or_path) {
            return Ok(Self::parse(name, text));
        }
        if name_or_path.contains('/') || name_or_path.ends_with(".conf") {
            let text =
                std::fs::read_to_string(name_or_path).map_err(|source| FragmentError::Read {
                    path: name_or_path.to_string(),
                    source,
                })?;
            return Ok(Self::parse(name_or_path, &text));
        }
        Err(FragmentError::Unknown(name_or_path.to_string()))
    }
}

/// How one requirement fares against a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// As wanted, built in (or off, if wanted off).
    Ok,
    /// Satisfied by a module: the initrd has to ship and load it.
    Module,
    /// Wanted on; the symbol is `is not set`.
    NotSet,
    /// Wanted on; the symbol is not in the config at all (this kernel does not know it,
    /// or its dependencies hide it).
    Absent,
    /// A module where built-in is needed.
    ModuleNotBuiltin,
    /// On where it must be off.
    MustBeOff,
    /// A different string or number.
    WrongValue,
}

impl Status {
    /// Whether the config fails the fragment on this line.
    pub fn is_problem(self) -> bool {
        !matches!(self, Status::Ok | Status::Module)
    }
}

/// One line of a check report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub fragment: String,
    pub symbol: String,
    pub want: Value,
    /// `None` when the symbol is absent.
    pub have: Option<Value>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

fn status(want: &Value, have: Option<&Value>) -> Status {
    match (want, have) {
        (Value::No, None | Some(Value::No)) => Status::Ok,
        (Value::No, Some(_)) => Status::MustBeOff,
        (Value::Yes | Value::Module, None) => Status::Absent,
        (Value::Yes | Value::Module, Some(Value::No)) => Status::NotSet,
        (_, Some(Value::Yes)) if matches!(want, Value::Yes | Value::Module) => Status::Ok,
        (Value::Yes, Some(Value::Module)) => Status::ModuleNotBuiltin,
        (Value::Module, Some(Value::Module)) => Status::Module,
        (Value::Other(w), Some(Value::Other(h))) if w == h => Status::Ok,
        (Value::Other(_), None) => Status::Absent,
        _ => Status::WrongValue,
    }
}

/// Checks `config` against each fragment, in order; one finding per requirement.
pub fn check(config: &Config, fragments: &[Fragment]) -> Vec<Finding> {
    fragments
        .iter()
        .flat_map(|f| {
            f.requirements.iter().map(|r| Finding {
                fragment: f.name.clone(),
                symbol: r.symbol.clone(),
                want: r.want.clone(),
                have: config.get(&r.symbol).cloned(),
                status: status(&r.want, config.get(&r.symbol)),
                module: r.module.clone(),
            })
        })
        .collect()
}

/// Modules the initrd must ship for `config`: options the fragments need that the
/// config builds as modules. Sorted, deduplicated.
pub fn needed_modules(findings: &[Finding]) -> Vec<String> {
    let mut m: Vec<String> = findings
        .iter()
        .filter(|f| f.have == Some(Value::Module) && f.want != Value::No)
        .filter_map(|f| f.module.clone())
        .collect();
    m.sort();
    m.dedup();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_and_fragment_lines() {
        let c = Config::parse(
            "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x # y\"\n",
        );
        assert_eq!(c.get("CONFIG_A"), Some(&Value::Yes));
        assert_eq!(c.get("CONFIG_B"), Some(&Value::Module));
        assert_eq!(c.get("CONFIG_C"), Some(&Value::No));
        assert_eq!(c.get("CONFIG_D"), Some(&Value::Other("\"x # y\"".into())));
        assert_eq!(c.get("CONFIG_E"), None);
        let f = Fragment::parse("t", "CONFIG_B=m # module: bee\nCONFIG_A=y\n");
        assert_eq!(f.requirements[0].module.as_deref(), Some("bee"));
        assert_eq!(f.requirements[1].module, None);
    }

    #[test]
    fn statuses_distinguish_y_m_n_and_absent() {
        let c = Config::parse("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_N=1\n");
        let f = Fragment::parse(
            "t",
            "CONFIG_A=m # module: a\nCONFIG_B=y\nCONFIG_B=m # module: b\nCONFIG_C=y\n\
             CONFIG_Z=y\n# CONFIG_A is not set\n# CONFIG_Z is not set\nCONFIG_N=2\nCONFIG_N=1\n",
        );
        let s: Vec<Status> = check(&c, &[f]).iter().map(|x| x.status).collect();
        assert_eq!(
            s,
            [
                Status::Ok,
                Status::ModuleNotBuiltin,
                Status::Module,
                Status::NotSet,
                Status::Absent,
                Status::MustBeOff,
                Status::Ok,
                Status::WrongValue,
                Status::Ok
            ]
        );
    }

    #[test]
    fn built_in_fragments_parse_and_merge() {
        for (name, _) in FRAGMENTS {
            let f = Fragment::load(name).unwrap();
            assert!(f.requirements.len() > 5, "{name}");
        }
        let mut c = Config::default();
        let frags: Vec<Fragment> = DEFAULT_FRAGMENTS
            .iter()
            .map(|n| Fragment::load(n).unwrap())
            .collect();
        for f in &frags {
            c.apply(f);
        }
        let merged = Config::parse(&c.render());
        let findings = check(&merged, &frags);
        assert!(findings.iter().all(|f| !f.status.is_problem()));
        assert!(needed_modules(&findings).contains(&"vsock".to_string()));
        assert!(Fragment::load("nope").is_err());
    }
}
