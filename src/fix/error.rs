//! One error enum for the fix layer: every variant names the guest path, rule file or fact
//! that is wrong, so the message tells the user where to look.

use std::io;

/// What went wrong while loading rules or facts, planning, or applying edits.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// An I/O error on a guest path (or, for `HostTree::new`, the host directory).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Resolving a guest path met more symlinks than a kernel would follow (ELOOP).
    #[error("{path}: too many levels of symbolic links (more than {limit})")]
    SymlinkLoop { path: String, limit: usize },
    /// A guest path that is not absolute or that holds a NUL byte.
    #[error("{path:?}: not an absolute guest path")]
    BadPath { path: String },
    /// A symlink whose target is not UTF-8: guest configuration paths are text.
    #[error("{path}: symlink target is not UTF-8")]
    NonUtf8Link { path: String },
    /// A file the engine would read as text is larger than it edits.
    #[error(
        "{path}: {size} bytes, larger than the {limit} bytes ferry reads as a configuration file"
    )]
    TooLarge { path: String, size: u64, limit: u64 },
    /// A text edit on a file that holds NUL bytes.
    #[error("{path}: binary file (NUL byte at offset {offset}); refusing to edit it as text")]
    Binary { path: String, offset: usize },
    /// The path is not what the operation needs (a directory where a file is wanted, …).
    #[error("{path}: {what}")]
    WrongKind { path: String, what: &'static str },
    /// A rule file that does not follow the schema: file, line, the field, and why.
    #[error("{file}:{line}: {field}: {message}")]
    Schema {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
    /// An edit whose second application changes the file again: it would never settle.
    #[error("{path}: this edit is not idempotent (applying it again changes the file again); fix the rule")]
    NotIdempotent { path: String },
    /// Two rule files define the same rule name in one rule directory.
    #[error("{file}: rule `{name}` is already defined in {other}")]
    DuplicateRule {
        file: String,
        name: String,
        other: String,
    },
    /// `--only`/`--skip`/`--enable` name a rule that no rule file defines.
    #[error("no rule named `{0}` (see `ferry fix --list`)")]
    UnknownRule(String),
    /// A facts file that cannot be read or does not match the schema.
    #[error("facts {file}: {message}")]
    Facts { file: String, message: String },
    /// A rule step failed while planning: nothing has been written.
    #[error("rule `{rule}` ({file}), edit {step}: {source}")]
    Step {
        rule: String,
        file: String,
        step: usize,
        #[source]
        source: Box<FixError>,
    },
    /// A rule file's condition cannot be evaluated (e.g. the file it reads is unreadable).
    #[error("rule `{rule}` ({file}), condition: {source}")]
    Condition {
        rule: String,
        file: String,
        #[source]
        source: Box<FixError>,
    },
}

pub type Result<T, E = FixError> = std::result::Result<T, E>;

impl FixError {
    pub(crate) fn io(path: &str, source: io::Error) -> Self {
        FixError::Io {
            path: path.to_string(),
            source,
        }
    }
}
