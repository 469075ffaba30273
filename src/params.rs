//! Stage parameters: what a kind declares ([`ParamSpec`]) and what a validated stage receives
//! ([`Params`]): every declared key present (defaults filled in), every value of the right type.
//!
//! Resolved params are part of a stage's fingerprint, so they serialise canonically (sorted keys).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// Integer within `[min, max]`.
    Int { min: i64, max: i64 },
    /// Float within `[min, max]`.
    Float { min: f64, max: f64 },
    /// `true` / `false`.
    Bool,
    /// Any string.
    Str,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A list of strings.
    StrList,
    /// A TOML table (passed to the kind as JSON), e.g. generator overrides.
    Table,
}

impl ParamType {
    /// Human-readable name used in error messages.
    pub fn describe(&self) -> String {
        match self {
            ParamType::Int { min, max } => format!("integer in [{min}, {max}]"),
            ParamType::Float { min, max } => format!("number in [{min}, {max}]"),
            ParamType::Bool => "boolean".into(),
            ParamType::Str => "string".into(),
            ParamType::Choice(c) => format!(
                "one of {}",
                c.iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ParamType::StrList => "list of strings".into(),
            ParamType::Table => "table".into(),
        }
    }

    /// Check and normalise a TOML value; `Err` holds the reason.
    fn coerce(&self, v: &toml::Value) -> std::result::Result<Value, String> {
        let found = || {
            format!(
                "expected {}, found {} `{}`",
                self.describe(),
                v.type_str(),
                v
            )
        };
        match (self, v) {
            (ParamType::Int { min, max }, toml::Value::Integer(i)) if i >= min && i <= max => {
                Ok(Value::from(*i))
            }
            (ParamType::Float { min, max }, toml::Value::Float(f)) if f >= min && f <= max => {
                Ok(Value::from(*f))
            }
            (ParamType::Float { min, max }, toml::Value::Integer(i))
                if (*i as f64) >= *min && (*i as f64) <= *max =>
            {
                Ok(Value::from(*i as f64))
            }
            (ParamType::Bool, toml::Value::Boolean(b)) => Ok(Value::from(*b)),
            (ParamType::Str, toml::Value::String(s)) => Ok(Value::from(s.clone())),
            (ParamType::Choice(c), toml::Value::String(s)) if c.contains(&s.as_str()) => {
                Ok(Value::from(s.clone()))
            }
            (ParamType::StrList, toml::Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(|s| Value::from(s.to_string())))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
                .ok_or_else(found),
            (ParamType::Table, toml::Value::Table(t)) => {
                serde_json::to_value(t).map_err(|e| e.to_string())
            }
            _ => Err(found()),
        }
    }
}

/// One declared parameter of a stage kind.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Key in the pipeline's `params` table.
    pub name: &'static str,
    /// Its type.
    pub ty: ParamType,
    /// Default (TOML syntax), or `None` if the param is required.
    pub default: Option<&'static str>,
    /// One line for `simgan kinds` and the docs.
    pub doc: &'static str,
    /// Declared with [`ParamSpec::added`]: at its default, left out of the canonical form.
    pub added: bool,
}

impl ParamSpec {
    /// A parameter with a default given in TOML syntax (e.g. `"64"`, `"\"cpu\""`, `"[]"`).
    pub const fn new(
        name: &'static str,
        ty: ParamType,
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        ParamSpec {
            name,
            ty,
            default: Some(default),
            doc,
            added: false,
        }
    }

    /// A parameter added to a kind after versions of it were committed. Its default must keep
    /// the kind's earlier behaviour; at that default it is left out of the canonical form
    /// ([`Params::to_json`]: fingerprints and manifests), so adding it does not make committed
    /// stages stale. Set to anything else, it counts like any param.
    pub const fn added(
        name: &'static str,
        ty: ParamType,
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        ParamSpec {
            added: true,
            ..ParamSpec::new(name, ty, default, doc)
        }
    }

    /// A parameter the pipeline must set.
    pub const fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default: None,
            doc,
            added: false,
        }
    }
}

/// Validated parameters of one stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    stage: String,
    values: BTreeMap<String, Value>,
    /// Keys of [`ParamSpec::added`] params at their default: not in the canonical form.
    at_added_default: std::collections::BTreeSet<String>,
}

/// Why a params table did not validate (the pipeline module turns these into errors naming the stage).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamProblem {
    /// A key the kind does not declare.
    Unknown {
        key: String,
        known: Vec<&'static str>,
    },
    /// A value of the wrong type or out of range.
    Mistyped { key: String, reason: String },
    /// A required key is absent.
    Missing { key: String },
}

impl Params {
    /// Validate a stage's params table against the kind's specs, filling in defaults.
    pub fn resolve(
        stage: &str,
        specs: &[ParamSpec],
        table: &toml::Table,
    ) -> std::result::Result<Params, ParamProblem> {
        for key in table.keys() {
            if !specs.iter().any(|s| s.name == key) {
                return Err(ParamProblem::Unknown {
                    key: key.clone(),
                    known: specs.iter().map(|s| s.name).collect(),
                });
            }
        }
        let mut values = BTreeMap::new();
        let mut at_added_default = std::collections::BTreeSet::new();
        for spec in specs {
            let default = match spec.default {
                Some(d) => Some(parse_default(d).map_err(|reason| ParamProblem::Mistyped {
                    key: spec.name.into(),
                    reason,
                })?),
                None => None,
            };
            let raw = match (table.get(spec.name), default.clone()) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d,
                (None, None) => {
                    return Err(ParamProblem::Missing {
                        key: spec.name.into(),
                    });
                }
            };
            let v = spec
                .ty
                .coerce(&raw)
                .map_err(|reason| ParamProblem::Mistyped {
                    key: spec.name.into(),
                    reason,
                })?;
            if spec.added
                && let Some(d) = &default
                && spec.ty.coerce(d).ok().as_ref() == Some(&v)
            {
                at_added_default.insert(spec.name.to_string());
            }
            values.insert(spec.name.to_string(), v);
        }
        Ok(Params {
            stage: stage.to_string(),
            values,
            at_added_default,
        })
    }

    /// Build params directly (tests and internal callers), still validated.
    pub fn from_pairs(
        stage: &str,
        specs: &[ParamSpec],
        pairs: &[(&str, toml::Value)],
    ) -> Result<Params> {
        let table: toml::Table = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Params::resolve(stage, specs, &table).map_err(|p| Error::stage(stage, format!("{p:?}")))
    }

    /// The canonical JSON form (sorted keys) used in fingerprints and manifests: every param
    /// but the [`ParamSpec::added`] ones at their default.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.values
                .iter()
                .filter(|(k, _)| !self.at_added_default.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.values.get(key).ok_or_else(|| {
            Error::stage(
                &self.stage,
                format!("param `{key}` is not declared by this kind"),
            )
        })
    }

    fn wrong(&self, key: &str, what: &str) -> Error {
        Error::stage(&self.stage, format!("param `{key}` is not a {what}"))
    }

    /// An integer param.
    pub fn int(&self, key: &str) -> Result<i64> {
        self.get(key)?
            .as_i64()
            .ok_or_else(|| self.wrong(key, "integer"))
    }

    /// A non-negative integer param as `usize`.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.int(key)?;
        usize::try_from(v).map_err(|_| self.wrong(key, "non-negative integer"))
    }

    /// A float param.
    pub fn float(&self, key: &str) -> Result<f64> {
        self.get(key)?
            .as_f64()
            .ok_or_else(|| self.wrong(key, "number"))
    }

    /// A boolean param.
    pub fn bool(&self, key: &str) -> Result<bool> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| self.wrong(key, "boolean"))
    }

    /// A string (or choice) param.
    pub fn str(&self, key: &str) -> Result<&str> {
        self.get(key)?
            .as_str()
            .ok_or_else(|| self.wrong(key, "string"))
    }

    /// A table param as JSON (an object).
    pub fn table(&self, key: &str) -> Result<&serde_json::Map<String, Value>> {
        self.get(key)?
            .as_object()
            .ok_or_else(|| self.wrong(key, "table"))
    }

    /// A list-of-strings param.
    pub fn str_list(&self, key: &str) -> Result<Vec<String>> {
        let arr = self
            .get(key)?
            .as_array()
            .ok_or_else(|| self.wrong(key, "list"))?;
        arr.iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.wrong(key, "list of strings"))
            })
            .collect()
    }
}

fn parse_default(d: &str) -> std::result::Result<toml::Value, String> {
    let table: toml::Table = toml::from_str(&format!("v = {d}"))
        .map_err(|e| format!("bad built-in default `{d}`: {e}"))?;
    table
        .get("v")
        .cloned()
        .ok_or_else(|| format!("bad built-in default `{d}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        ParamSpec::new("rows", ParamType::Int { min: 1, max: 1000 }, "10", "rows"),
        ParamSpec::new("lr", ParamType::Float { min: 0.0, max: 1.0 }, "0.001", "lr"),
        ParamSpec::new("domain", ParamType::Choice(&["a", "b"]), "\"a\"", "domain"),
        ParamSpec::required("name", ParamType::Str, "name"),
    ];

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap_or_default()
    }

    #[test]
    fn defaults_fill_and_types_check() {
        let p = Params::resolve("s", SPECS, &table("name = \"x\"\nlr = 1")).unwrap_or_default();
        assert_eq!(p.int("rows").ok(), Some(10));
        assert_eq!(p.float("lr").ok(), Some(1.0));
        assert_eq!(p.str("domain").ok(), Some("a"));
    }

    #[test]
    fn problems_name_the_key() {
        assert!(
            matches!(Params::resolve("s", SPECS, &table("name=\"x\"\nrowz = 1")), Err(ParamProblem::Unknown { key, .. }) if key == "rowz")
        );
        assert!(
            matches!(Params::resolve("s", SPECS, &table("name=\"x\"\nrows = \"1\"")), Err(ParamProblem::Mistyped { key, .. }) if key == "rows")
        );
        assert!(
            matches!(Params::resolve("s", SPECS, &table("name=\"x\"\nrows = 0")), Err(ParamProblem::Mistyped { key, .. }) if key == "rows")
        );
        assert!(
            matches!(Params::resolve("s", SPECS, &table("name=\"x\"\ndomain = \"c\"")), Err(ParamProblem::Mistyped { key, .. }) if key == "domain")
        );
        assert!(
            matches!(Params::resolve("s", SPECS, &table("")), Err(ParamProblem::Missing { key }) if key == "name")
        );
    }

    #[test]
    fn an_added_param_at_its_default_leaves_the_canonical_form_alone() {
        const OLD: &[ParamSpec] = &[ParamSpec::new(
            "rows",
            ParamType::Int { min: 1, max: 1000 },
            "10",
            "rows",
        )];
        const NEW: &[ParamSpec] = &[
            ParamSpec::new("rows", ParamType::Int { min: 1, max: 1000 }, "10", "rows"),
            ParamSpec::added("mode", ParamType::Choice(&["off", "on"]), "\"off\"", "mode"),
        ];
        let old = Params::resolve("s", OLD, &table("rows = 5")).unwrap_or_default();
        let new = Params::resolve("s", NEW, &table("rows = 5")).unwrap_or_default();
        // Same canonical form (fingerprint, manifest), and the kind still reads the default.
        assert_eq!(old.to_json(), new.to_json());
        assert_eq!(new.str("mode").ok(), Some("off"));
        // Set explicitly to the default: still the same; set otherwise: it counts.
        let same =
            Params::resolve("s", NEW, &table("rows = 5\nmode = \"off\"")).unwrap_or_default();
        assert_eq!(same.to_json(), old.to_json());
        let on = Params::resolve("s", NEW, &table("rows = 5\nmode = \"on\"")).unwrap_or_default();
        assert_ne!(on.to_json(), old.to_json());
        assert_eq!(on.to_json()["mode"], "on");
    }
}
