//! Config errors that say where: file, line:column, and the key path.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The key path, e.g. `check[2].interval`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors against one config's source, turning spans (of the
/// expanded text) into line:column of the file.
pub(crate) struct Reporter<'a> {
    source: &'a super::Source,
    pub(crate) errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(source: &'a super::Source) -> Self {
        Reporter {
            source,
            errors: Vec::new(),
        }
    }

    /// An error at `span` if given, else at the key's own position.
    pub(crate) fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let key = key.into();
        let e = match span {
            Some(s) => self.source.error_at(&s, key, message),
            None => self.source.error(key, message),
        };
        self.errors.push(e);
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_col_is_one_based() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(super::line_col(t, 0), (1, 1));
        assert_eq!(super::line_col(t, 6), (2, 1));
        assert_eq!(super::line_col(t, 9), (2, 4));
    }
}
