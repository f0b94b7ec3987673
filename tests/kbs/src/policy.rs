//! A simple resource policy in place of Trustee's Rego one:
//! `{"default":"allow"|"deny","allow":["default/key/*",...],"deny":[...]}`.
//!
//! A path is denied if a `deny` pattern matches it, else allowed if an `allow` pattern
//! matches, else `default` decides (no policy file: allow everything, like Trustee's
//! default resource policy for a trusted token). Patterns are `/`-separated segments: a
//! literal matches itself, `*` matches any one segment and, as the *last* segment, any
//! one or more remaining segments (`default/*` covers `default/key/1`), and `abc*` matches
//! a segment starting with `abc`.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub default: Decision,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

impl Policy {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn allows(&self, path: &str) -> bool {
        if self.deny.iter().any(|p| matches(p, path)) {
            return false;
        }
        if self.allow.iter().any(|p| matches(p, path)) {
            return true;
        }
        self.default == Decision::Allow
    }
}

/// Does `pattern` match the resource `path` (`repo/type/tag`)?
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let seg: Vec<&str> = path.split('/').collect();
    for (i, p) in pat.iter().enumerate() {
        let last = i + 1 == pat.len();
        let Some(s) = seg.get(i) else {
            return false;
        };
        if *p == "*" {
            if last {
                return true;
            }
            continue;
        }
        let ok = match p.strip_suffix('*') {
            Some(prefix) => s.starts_with(prefix),
            None => p == s,
        };
        if !ok {
            return false;
        }
    }
    pat.len() == seg.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("default/key/1", "default/key/1"));
        assert!(!matches("default/key/1", "default/key/12"));
        assert!(matches("default/key/*", "default/key/12"));
        assert!(matches("default/*", "default/key/12"));
        assert!(matches("*", "a/b/c"));
        assert!(matches("*/key/*", "x/key/y"));
        assert!(!matches("*/key/*", "x/cert/y"));
        assert!(matches("default/key/ab*", "default/key/abc"));
        assert!(!matches("default/key/ab*", "default/key/xabc"));
        assert!(!matches("default/key", "default/key/1"));
        assert!(!matches("default/key/1/2", "default/key/1"));
    }

    #[test]
    fn decisions() {
        let p = Policy::from_json(
            r#"{"default":"deny","allow":["default/*"],"deny":["default/key/secret*"]}"#,
        )
        .unwrap();
        assert!(p.allows("default/key/1"));
        assert!(!p.allows("default/key/secret-2"));
        assert!(!p.allows("other/key/1"));
        assert!(Policy::default().allows("any/thing/here"));
        assert!(Policy::from_json(r#"{"default":"maybe"}"#).is_err());
        assert!(Policy::from_json(r#"{"alow":[]}"#).is_err());
    }
}
