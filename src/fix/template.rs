//! `{{key}}` templates in rule strings, filled from the facts.
//!
//! Keys are checked when the rule file is read (so a typo is a schema error with its line);
//! a key whose fact is unknown for this guest skips the rule with that reason. Where the
//! result is a regex or a regex replacement, the fact's value is escaped for it, so a fact
//! can never change a pattern's meaning.

use super::facts::{Facts, TEMPLATE_KEYS};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Key(String),
}

/// How a filled-in value is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Plain,
    /// Inside a regex: metacharacters escaped.
    Regex,
    /// Inside a regex replacement: `$` doubled.
    Replacement,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The longest key name; anything longer between braces is a typo.
const MAX_KEY: usize = 64;

impl Template {
    /// Parses `s`; the error says what is wrong with which `{{…}}`.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some((lit, after)) = rest.split_once("{{") {
            if !lit.is_empty() {
                parts.push(Part::Lit(lit.to_string()));
            }
            let Some((key, tail)) = after.split_once("}}") else {
                return Err("`{{` without a closing `}}`".into());
            };
            let key = key.trim();
            if key.len() > MAX_KEY || !TEMPLATE_KEYS.contains(&key) {
                return Err(format!(
                    "unknown template key `{{{{{}}}}}`, expected one of: {}",
                    key.chars().take(MAX_KEY).collect::<String>(),
                    TEMPLATE_KEYS.join(", ")
                ));
            }
            parts.push(Part::Key(key.to_string()));
            rest = tail;
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// A template with no keys.
    pub fn literal(s: &str) -> Template {
        Template {
            parts: vec![Part::Lit(s.to_string())],
        }
    }

    pub fn has_keys(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Key(_)))
    }

    /// Fills the template; `Err(key)` names the first key whose fact is unknown.
    pub fn fill(&self, facts: &Facts, ctx: Context) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Key(k) => {
                    let v = super::facts::template_value(facts, k).ok_or_else(|| k.clone())?;
                    match ctx {
                        Context::Plain => out.push_str(&v),
                        Context::Regex => out.push_str(&regex::escape(&v)),
                        Context::Replacement => out.push_str(&v.replace('$', "$$")),
                    }
                }
            }
        }
        Ok(out)
    }

    /// The template with every key replaced by `x`: to check a regex's syntax at load time.
    pub fn sample(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.as_str(),
                Part::Key(_) => "x",
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_escape() {
        let f = Facts {
            distro: "rhel".into(),
            root: Some(crate::fix::facts::Root {
                uuid: Some("a.b$1".into()),
                ..Default::default()
            }),
            ..Facts::default()
        };
        let t = Template::parse("x{{ root.uuid }}-{{distro}}").unwrap();
        assert_eq!(t.fill(&f, Context::Plain).unwrap(), "xa.b$1-rhel");
        assert_eq!(t.fill(&f, Context::Regex).unwrap(), r"xa\.b\$1-rhel");
        assert_eq!(t.fill(&f, Context::Replacement).unwrap(), "xa.b$$1-rhel");
        let t = Template::parse("{{root.label}}").unwrap();
        assert_eq!(t.fill(&f, Context::Plain), Err("root.label".into()));
    }

    #[test]
    fn errors() {
        assert!(Template::parse("{{nope}}").is_err());
        assert!(Template::parse("{{distro").is_err());
        assert_eq!(Template::parse("a } b {").unwrap().sample(), "a } b {");
    }
}
