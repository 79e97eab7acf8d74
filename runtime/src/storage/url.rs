//! The storage URL: the one setting that names where cluster documents live.

use std::fmt;
use std::path::{Path, PathBuf};

use super::StorageError;

/// Where cluster documents live, parsed from `STORAGE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// `s3://bucket/prefix/`: any S3-compatible store. `prefix` is empty or ends with `/`.
    S3 { bucket: String, prefix: String },
    /// `file:///abs/dir/`: a local directory.
    Local { dir: PathBuf },
}

const ACCEPTED: &str = "expected s3://bucket/prefix/ (prefix optional) or file:///absolute/dir/";

impl StorageUrl {
    /// Parses `s3://bucket/prefix/` or `file:///abs/dir/`.
    ///
    /// The S3 prefix is normalised to end with `/` when it is not empty, so `s3://b/p` and
    /// `s3://b/p/` name the same place. The path of a `file://` URL is taken literally (no
    /// percent-decoding).
    pub fn parse(raw: &str) -> Result<StorageUrl, StorageError> {
        let invalid = |reason: String| StorageError::InvalidUrl {
            url: raw.to_owned(),
            reason,
        };
        let text = raw.trim();
        if let Some(rest) = strip_scheme(text, "s3://") {
            let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(bucket).map_err(invalid)?;
            if path.contains(['?', '#']) {
                return Err(invalid(
                    "query strings and fragments are not supported in an s3:// URL".to_owned(),
                ));
            }
            let trimmed = path.trim_end_matches('/');
            if trimmed.starts_with('/')
                || trimmed
                    .split('/')
                    .any(|seg| seg.is_empty() && !trimmed.is_empty())
            {
                return Err(invalid(format!(
                    "the prefix {path:?} has an empty path segment ('//')"
                )));
            }
            let prefix = if trimmed.is_empty() {
                String::new()
            } else {
                format!("{trimmed}/")
            };
            Ok(StorageUrl::S3 {
                bucket: bucket.to_owned(),
                prefix,
            })
        } else if let Some(rest) = strip_scheme(text, "file://") {
            // file:///dir (empty host) or file://localhost/dir; any other host is not local.
            let path = if rest.starts_with('/') {
                rest
            } else if let Some(after) = strip_scheme(rest, "localhost/") {
                // Keep the leading slash that separated the host from the path.
                &rest[rest.len() - after.len() - 1..]
            } else {
                return Err(invalid(
                    "a file:// URL needs an absolute path (file:///var/lib/ksd/), not a host"
                        .to_owned(),
                ));
            };
            if path.contains(['?', '#']) {
                return Err(invalid(
                    "query strings and fragments are not supported in a file:// URL".to_owned(),
                ));
            }
            let dir = Path::new(path);
            if !dir.is_absolute() {
                return Err(invalid("the directory must be an absolute path".to_owned()));
            }
            Ok(StorageUrl::Local {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(invalid(ACCEPTED.to_owned()))
        }
    }

    /// Whether this URL names an S3-compatible store.
    pub fn is_s3(&self) -> bool {
        matches!(self, StorageUrl::S3 { .. })
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StorageUrl::Local { dir } => {
                let shown = dir.display().to_string();
                if shown.ends_with('/') {
                    write!(f, "file://{shown}")
                } else {
                    write!(f, "file://{shown}/")
                }
            }
        }
    }
}

impl std::str::FromStr for StorageUrl {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorageUrl::parse(s)
    }
}

/// Case-insensitive scheme match (`S3://` is still S3).
fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    let head = text.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &text[scheme.len()..])
}

/// S3 bucket naming rules (general purpose buckets): 3 to 63 characters, lowercase letters,
/// digits, dots and hyphens, starting and ending with a letter or digit, no `..`, not shaped like
/// an IPv4 address. Checked here so a typo is a start-up error, not a stream of 400s later.
fn validate_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err(format!("the bucket name is missing; {ACCEPTED}"));
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!(
            "bucket name {bucket:?} must be 3 to 63 characters long"
        ));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "bucket name {bucket:?} contains {c:?}: only lowercase letters, digits, '.' and '-' are allowed"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err(format!(
            "bucket name {bucket:?} must start and end with a letter or digit"
        ));
    }
    if bucket.contains("..") {
        return Err(format!("bucket name {bucket:?} must not contain '..'"));
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!("bucket name {bucket:?} must not be an IP address"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> StorageUrl {
        StorageUrl::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    #[test]
    fn parses_s3_urls_and_normalises_the_prefix() {
        assert_eq!(StorageUrl::parse("s3://bucket/").unwrap(), s3("bucket", ""));
        assert_eq!(StorageUrl::parse("s3://bucket").unwrap(), s3("bucket", ""));
        assert_eq!(
            StorageUrl::parse("s3://bucket/p").unwrap(),
            s3("bucket", "p/")
        );
        assert_eq!(
            StorageUrl::parse("s3://bucket/p/").unwrap(),
            s3("bucket", "p/")
        );
        assert_eq!(
            StorageUrl::parse("s3://my.bucket-1/a/b/").unwrap(),
            s3("my.bucket-1", "a/b/")
        );
        assert_eq!(
            StorageUrl::parse(" S3://bucket/x ").unwrap(),
            s3("bucket", "x/")
        );
    }

    #[test]
    fn display_gives_back_the_normalised_url() {
        for (input, shown) in [
            ("s3://bucket", "s3://bucket/"),
            ("s3://bucket/p", "s3://bucket/p/"),
            ("s3://bucket/a/b/", "s3://bucket/a/b/"),
            ("file:///var/lib/ksd", "file:///var/lib/ksd/"),
            ("file:///var/lib/ksd/", "file:///var/lib/ksd/"),
            ("file:///", "file:///"),
        ] {
            let url = StorageUrl::parse(input).unwrap();
            assert_eq!(url.to_string(), shown, "{input}");
            assert_eq!(
                StorageUrl::parse(shown).unwrap(),
                url,
                "round trip of {shown}"
            );
        }
    }

    #[test]
    fn parses_file_urls() {
        assert_eq!(
            StorageUrl::parse("file:///var/lib/ksd/").unwrap(),
            StorageUrl::Local {
                dir: PathBuf::from("/var/lib/ksd/")
            }
        );
        assert_eq!(
            StorageUrl::parse("file://localhost/srv/x").unwrap(),
            StorageUrl::Local {
                dir: PathBuf::from("/srv/x")
            }
        );
    }

    #[test]
    fn rejects_other_forms_and_says_which_are_accepted() {
        for bad in [
            "",
            "/var/lib/ksd",
            "bucket/prefix",
            "http://bucket/prefix",
            "minio://bucket",
        ] {
            let err = StorageUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("s3://bucket/prefix/"), "{bad}: {err}");
            assert!(err.contains("file:///"), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_bad_file_urls() {
        for bad in ["file://host/dir", "file://relative", "file:///a?b"] {
            assert!(StorageUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validates_bucket_names() {
        for bad in [
            "s3:///prefix",
            "s3://ab/",
            "s3://Bucket/",
            "s3://bucket_1/",
            "s3://-bucket/",
            "s3://bucket-/",
            "s3://a..b/",
            "s3://192.168.1.10/",
            &format!("s3://{}/", "a".repeat(64)),
        ] {
            let err = StorageUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("bucket"), "{bad}: {err}");
        }
        assert!(StorageUrl::parse(&format!("s3://{}/", "a".repeat(63))).is_ok());
    }

    #[test]
    fn rejects_empty_segments_and_queries_in_the_prefix() {
        for bad in ["s3://bucket//p/", "s3://bucket/a//b/", "s3://bucket/p?x=1"] {
            assert!(StorageUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
