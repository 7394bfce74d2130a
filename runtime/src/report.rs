//! Errors as one log line.

use std::error::Error;
use std::fmt;

/// Displays an error and its `source()` chain joined by `": "` (as anyhow's
/// `{:#}` does), for logs written where the error is handled rather than returned.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read the bundle")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn joins_the_chain() {
        let e = Outer(std::io::Error::other("no such file"));
        assert_eq!(
            Chain(&e).to_string(),
            "cannot read the bundle: no such file"
        );
    }
}
