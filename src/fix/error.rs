//! One error enum for the fix layer: every variant names the guest path, rule file or fact
//! that is wrong, so the message tells the user where to look.

use crate::fs::files;
use std::io;

/// What went wrong while loading rules or facts, planning, or applying edits.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A guest path that cannot be read or written as asked.
    #[error(transparent)]
    Files(#[from] files::Error),
    /// The guest's disk images could not be opened or edited.
    #[error(transparent)]
    Block(#[from] crate::block::Error),
    /// The guest's disks hold no operating system to fix, or several.
    #[error(transparent)]
    Guest(#[from] crate::guest::Error),
    /// The guest's filesystems refused a write or a sync.
    #[error("{what}: {source}")]
    Fs {
        what: String,
        #[source]
        source: crate::fs::Error,
    },
    /// Arguments that do not go together.
    #[error("{0}")]
    Usage(String),
    /// A text edit on a file that holds NUL bytes.
    #[error("{path}: binary file (NUL byte at offset {offset}); refusing to edit it as text")]
    Binary { path: String, offset: usize },
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
        source: Box<Error>,
    },
    /// A rule file's condition cannot be evaluated (e.g. the file it reads is unreadable).
    #[error("rule `{rule}` ({file}), condition: {source}")]
    Condition {
        rule: String,
        file: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &str, source: io::Error) -> Self {
        Error::Files(files::Error::io(path, source))
    }
}
