//! Where cluster documents live: an S3-compatible bucket or a local directory, behind one
//! [`Storage`] value that both agents use.
//!
//! Keys are always relative to the prefix of the [`StorageUrl`] (`a.traefik.yaml`, not
//! `prefix/a.traefik.yaml`) and name direct children only: a key never contains `/`.
//! ETags are opaque strings compared for equality; a local directory computes its own from the
//! content so that both backends behave alike.

pub mod bounded;
mod local;
mod s3;
mod url;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

pub use self::local::LocalStorage;
pub use self::s3::{S3Storage, sdk_config};
pub use self::url::StorageUrl;

/// The error type of a storage operation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How an S3 client is set up beyond the AWS SDK's standard chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Path-style addressing (`https://host/bucket/key`). `None`: on when an endpoint URL is
    /// configured (MinIO, Garage, Ceph), off otherwise (AWS S3 virtual-hosted style).
    pub force_path_style: Option<bool>,
    /// The proof of concept's `MINIO_*` variables, applied on top of the standard chain.
    pub legacy: LegacyMinio,
}

/// The proof of concept's `MINIO_*` settings. [`crate::cli::StorageArgs::resolve`] keeps only
/// the ones that no standard variable overrides, so [`Storage::connect`] applies whatever is
/// set here.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LegacyMinio {
    /// `MINIO_ENDPOINT`: `host:port` or a URL; becomes the S3 endpoint URL.
    pub endpoint: Option<String>,
    /// `MINIO_ACCESS_KEY_ID`: static credentials, with `secret_access_key`.
    pub access_key_id: Option<String>,
    /// `MINIO_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `MINIO_BUCKET`: the bucket when `STORAGE_URL` is not given.
    pub bucket: Option<String>,
    /// `MINIO_SSL_ENABLED`: the scheme for an endpoint given without one (`https` when true).
    pub ssl_enabled: Option<bool>,
}

impl std::fmt::Debug for LegacyMinio {
    // NB: hand-written so the secret never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyMinio")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("bucket", &self.bucket)
            .field("ssl_enabled", &self.ssl_enabled)
            .finish()
    }
}

impl LegacyMinio {
    /// The endpoint as a URL: `MINIO_ENDPOINT` with `http://` or `https://` added when it has
    /// no scheme (`https://` only when `MINIO_SSL_ENABLED` is true, as the proof of concept did).
    pub fn endpoint_url(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?.trim();
        if endpoint.is_empty() {
            return None;
        }
        if endpoint.contains("://") {
            return Some(endpoint.to_owned());
        }
        let scheme = if self.ssl_enabled == Some(true) {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{endpoint}"))
    }
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the prefix.
    pub key: String,
    /// Opaque, quoted as S3 returns it; changes whenever the content changes.
    pub etag: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

/// An object's content and what travels with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    /// User metadata (S3 `x-amz-meta-*`, without the prefix; names lowercase).
    pub metadata: BTreeMap<String, String>,
}

/// The answer to a (conditional) fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The object still has the ETag given as `if_none_match`.
    NotModified,
    /// There is no object under that key.
    Missing,
    Object(Object),
}

/// A write precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    None,
    /// Write only if the current object has this ETag (`If-Match`).
    IfMatch(String),
    /// Write only if there is no object yet (`If-None-Match: *`).
    IfAbsent,
}

/// What a put achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored; the new ETag when the server returned one.
    Written { etag: Option<String> },
    /// The condition did not hold and nothing was written. Servers that ignore conditional
    /// headers (Garage) write anyway and answer `Written`.
    PreconditionFailed,
}

/// A storage failure. Every variant names the operation and where it was aimed; the
/// underlying error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    #[error("cannot set up storage {location}: {reason}")]
    Setup {
        location: String,
        reason: String,
        #[source]
        source: Option<BoxError>,
    },

    #[error("listing {location} failed: {detail}")]
    List {
        location: String,
        detail: String,
        class: ErrorClass,
        #[source]
        source: BoxError,
    },

    #[error("reading {location}{key} failed: {detail}")]
    Get {
        location: String,
        key: String,
        detail: String,
        class: ErrorClass,
        #[source]
        source: BoxError,
    },

    #[error("writing {location}{key} failed: {detail}")]
    Put {
        location: String,
        key: String,
        detail: String,
        class: ErrorClass,
        #[source]
        source: BoxError,
    },

    #[error("deleting {location}{key} failed: {detail}")]
    Delete {
        location: String,
        key: String,
        detail: String,
        class: ErrorClass,
        #[source]
        source: BoxError,
    },

    #[error("{location}{key} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        location: String,
        key: String,
        size: u64,
        limit: u64,
    },
}

/// What kind of failure an operation met, as far as it can be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// No connection could be made or it broke (network, DNS, server down).
    Unreachable,
    Timeout,
    /// The server refused the credentials or the request (401/403).
    AccessDenied,
    /// No credentials could be obtained (nothing in the AWS SDK's chain).
    Credentials,
    /// The bucket or directory does not exist.
    NoSuchBucket,
    /// Any other answer the server gave.
    Service,
    /// A local file-system error.
    Io,
    Other,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::Timeout => "timeout",
            ErrorClass::AccessDenied => "access_denied",
            ErrorClass::Credentials => "credentials",
            ErrorClass::NoSuchBucket => "no_such_bucket",
            ErrorClass::Service => "service",
            ErrorClass::Io => "io",
            ErrorClass::Other => "other",
        }
    }
}

impl StorageError {
    /// A short, stable label for a metric: what went wrong (`unreachable`, `timeout`,
    /// `access_denied`, `too_large`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::InvalidUrl { .. } => "invalid_url",
            StorageError::InvalidKey { .. } => "invalid_key",
            StorageError::Setup { .. } => "setup",
            StorageError::TooLarge { .. } => "too_large",
            StorageError::List { class, .. }
            | StorageError::Get { class, .. }
            | StorageError::Put { class, .. }
            | StorageError::Delete { class, .. } => class.as_str(),
        }
    }

    /// Which operation failed (`list`, `get`, `put`, `delete`, `setup`), for a metric label.
    pub fn operation(&self) -> &'static str {
        match self {
            StorageError::InvalidUrl { .. } | StorageError::Setup { .. } => "setup",
            StorageError::InvalidKey { .. } => "key",
            StorageError::List { .. } => "list",
            StorageError::Get { .. } | StorageError::TooLarge { .. } => "get",
            StorageError::Put { .. } => "put",
            StorageError::Delete { .. } => "delete",
        }
    }

    /// The object was refused because of its size.
    pub fn is_too_large(&self) -> bool {
        matches!(self, StorageError::TooLarge { .. })
    }

    /// The store could not be reached or did not answer in time: worth retrying later, and
    /// no reason to change anything already derived from it.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.class(),
            Some(ErrorClass::Unreachable | ErrorClass::Timeout)
        )
    }

    /// The bucket (or local directory) does not exist.
    pub fn is_no_such_bucket(&self) -> bool {
        self.class() == Some(ErrorClass::NoSuchBucket)
    }

    fn class(&self) -> Option<ErrorClass> {
        match self {
            StorageError::List { class, .. }
            | StorageError::Get { class, .. }
            | StorageError::Put { class, .. }
            | StorageError::Delete { class, .. } => Some(*class),
            _ => None,
        }
    }
}

/// An S3 bucket or a local directory. Cheap to clone (the S3 client is shared).
#[derive(Debug, Clone)]
pub enum Storage {
    S3(S3Storage),
    Local(LocalStorage),
}

impl Storage {
    /// Sets up access to `url`. For S3 this loads the AWS SDK's standard chain (environment,
    /// profiles, web identity, instance roles) without contacting the server; the first
    /// operation tells whether the bucket is reachable. A local directory is created when
    /// missing.
    pub async fn connect(url: &StorageUrl, opts: &S3Options) -> Result<Storage, StorageError> {
        match url {
            StorageUrl::S3 { bucket, prefix } => Ok(Storage::S3(
                S3Storage::connect(bucket.clone(), prefix.clone(), opts).await,
            )),
            StorageUrl::Local { dir } => Ok(Storage::Local(LocalStorage::open(dir).await?)),
        }
    }

    /// An S3 storage over a client built elsewhere (tests, tools with their own config).
    pub fn from_s3_client(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Storage {
        Storage::S3(S3Storage::from_client(client, bucket.into(), prefix.into()))
    }

    /// Asks an S3 server for at most `n` keys per listing page (servers default to 1000);
    /// [`Storage::list`] still returns every object. No effect on a local directory.
    pub fn with_list_page_size(mut self, n: i32) -> Storage {
        if let Storage::S3(s3) = &mut self {
            s3.set_list_page_size(n);
        }
        self
    }

    /// Files of a local directory larger than `limit` are never read: a listing reports their
    /// size without hashing them, and every get refuses them. No effect on S3, whose listings
    /// carry sizes and whose gets are bounded by [`Storage::get_limited`].
    pub fn with_max_object_bytes(mut self, limit: u64) -> Storage {
        if let Storage::Local(local) = &mut self {
            local.set_read_limit(limit);
        }
        self
    }

    /// The objects directly under the prefix (keys without `/`), in key order.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        match self {
            Storage::S3(s) => s.list().await,
            Storage::Local(l) => l.list().await,
        }
    }

    /// Fetches `key`; with `if_none_match`, answers [`Fetched::NotModified`] when the object
    /// still has that ETag.
    pub async fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
    ) -> Result<Fetched, StorageError> {
        self.fetch(key, if_none_match, None).await
    }

    /// As [`Storage::get`], refusing with [`StorageError::TooLarge`] an object over `max_bytes`
    /// before its body is read into memory.
    pub async fn get_limited(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetched, StorageError> {
        self.fetch(key, if_none_match, Some(max_bytes)).await
    }

    async fn fetch(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        max_bytes: Option<u64>,
    ) -> Result<Fetched, StorageError> {
        validate_key(key)?;
        match self {
            Storage::S3(s) => s.get(key, if_none_match, max_bytes).await,
            Storage::Local(l) => l.get(key, if_none_match, max_bytes).await,
        }
    }

    /// Stores `bytes` under `key` (`Content-Type: application/yaml`) with user `metadata`,
    /// if `condition` holds.
    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &BTreeMap<String, String>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StorageError> {
        validate_key(key)?;
        match self {
            Storage::S3(s) => s.put(key, bytes, metadata, condition).await,
            Storage::Local(l) => l.put(key, bytes, metadata, condition).await,
        }
    }

    /// [`Storage::put`] for a caller that already hashed `bytes`: `content_hash` must be
    /// [`ksd_shared::content_hash`] of them. A local directory takes its ETag from it instead of
    /// hashing the bytes again; S3 servers compute their own ETag and ignore it.
    pub async fn put_hashed(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_hash: &str,
        metadata: &BTreeMap<String, String>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StorageError> {
        validate_key(key)?;
        match self {
            Storage::S3(s) => s.put(key, bytes, metadata, condition).await,
            Storage::Local(l) => {
                l.put_hashed(key, bytes, Some(content_hash), metadata, condition)
                    .await
            }
        }
    }

    /// Removes `key`; removing a missing key succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        match self {
            Storage::S3(s) => s.delete(key).await,
            Storage::Local(l) => l.delete(key).await,
        }
    }

    /// The storage one level down: `<prefix><name>/` in a bucket, `<dir>/<name>/` on disk
    /// (created when missing). Its keys are again plain names; [`Storage::list`] of `self`
    /// never shows them. `name` follows the key rules.
    pub async fn child(&self, name: &str) -> Result<Storage, StorageError> {
        validate_key(name)?;
        match self {
            Storage::S3(s) => Ok(Storage::S3(s.child(name))),
            Storage::Local(l) => Ok(Storage::Local(
                LocalStorage::open(&l.dir().join(name)).await?,
            )),
        }
    }

    /// A one-line description for logs (URL, endpoint, addressing style).
    pub fn describe(&self) -> String {
        match self {
            Storage::S3(s) => s.describe(),
            Storage::Local(l) => l.describe(),
        }
    }

    /// The URL this storage was opened with.
    pub fn url(&self) -> StorageUrl {
        match self {
            Storage::S3(s) => s.url(),
            Storage::Local(l) => StorageUrl::Local {
                dir: PathBuf::from(l.dir()),
            },
        }
    }
}

/// Keys name direct children of the prefix and must be usable as file names too.
fn validate_key(key: &str) -> Result<(), StorageError> {
    let reason = if key.is_empty() {
        "empty"
    } else if key.contains('/') || key.contains('\\') {
        "contains a path separator"
    } else if key.starts_with('.') {
        "starts with '.' (hidden names are reserved)"
    } else if key.chars().any(char::is_control) {
        "contains a control character"
    } else if key.len() > 255 {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// Whether two ETags name the same object version, compared the way a server would:
/// tolerating missing quotes and weak markers (`W/"abc"` is `"abc"` is `abc`). The one ETag
/// rule of the workspace: the local store's conditional writes and the syncer's "already
/// processed" check both use it.
pub fn same_etag(a: &str, b: &str) -> bool {
    bare_etag(a) == bare_etag(b)
}

/// An ETag without quotes or weak marker: the form [`same_etag`] compares.
pub fn bare_etag(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/").trim_matches('"')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn etags_compare_without_quotes_or_weak_markers() {
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("W/\"abc\"", " \"abc\" "));
        assert!(!same_etag("\"abc\"", "\"abd\""));
        assert!(!same_etag("", "\"abc\""));
    }

    #[test]
    fn keys_must_be_plain_file_names() {
        assert!(validate_key("a.traefik.yaml").is_ok());
        for bad in ["", "a/b", "..", ".hidden", "a\\b", "x\ny"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn legacy_endpoint_gets_a_scheme() {
        let mut legacy = LegacyMinio {
            endpoint: Some("minio:9000".into()),
            ..LegacyMinio::default()
        };
        assert_eq!(legacy.endpoint_url().as_deref(), Some("http://minio:9000"));
        legacy.ssl_enabled = Some(true);
        assert_eq!(legacy.endpoint_url().as_deref(), Some("https://minio:9000"));
        legacy.endpoint = Some("http://minio:9000".into());
        assert_eq!(legacy.endpoint_url().as_deref(), Some("http://minio:9000"));
        legacy.endpoint = Some("  ".into());
        assert_eq!(legacy.endpoint_url(), None);
    }

    #[test]
    fn legacy_debug_hides_the_secret() {
        let legacy = LegacyMinio {
            secret_access_key: Some("hunter2".into()),
            ..LegacyMinio::default()
        };
        assert!(!format!("{legacy:?}").contains("hunter2"));
    }
}
