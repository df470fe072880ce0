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
    LineIndex::new(text).line_col(text, offset)
}

/// Where each line of a text starts, so positioning many errors in a big
/// config (50,000 checks, each with a mistake) costs a binary search
/// each, not a scan of the file from its start.
#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// 1-based line and column (in characters) of a byte offset of `text`,
    /// the text this index was built from; an offset inside a character
    /// counts as that character.
    pub(crate) fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        (line, text[start..offset].chars().count() + 1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_col_is_one_based() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(super::line_col(t, 0), (1, 1));
        assert_eq!(super::line_col(t, 6), (2, 1));
        assert_eq!(super::line_col(t, 9), (2, 4));
        assert_eq!(super::line_col(t, 13), (3, 1), "after the last newline");
        assert_eq!(super::line_col(t, 99), (3, 1), "past the end");
        assert_eq!(super::line_col("", 0), (1, 1));
    }

    #[test]
    fn columns_count_characters_and_offsets_inside_one_round_down() {
        let t = "é = 1\nnå = 2";
        assert_eq!(super::line_col(t, 2), (1, 2), "after é (2 bytes)");
        assert_eq!(super::line_col(t, 1), (1, 1), "inside é");
        assert_eq!(super::line_col(t, 10), (2, 3), "after nå");
    }
}
