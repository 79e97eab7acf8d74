//! The S3 backend (AWS S3, MinIO, Garage, Ceph RGW and other compatible stores).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use aws_config::meta::region::RegionProviderChain;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::{
    BoxError, ErrorClass, Fetched, Object, ObjectInfo, PutCondition, PutOutcome, S3Options,
    StorageError, StorageUrl,
};
use crate::error_chain;

/// Used when no region is configured anywhere: MinIO and Garage accept any region, and the
/// SDK refuses to sign without one.
const DEFAULT_REGION: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Covers all attempts of one operation, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
const CONTENT_TYPE: &str = "application/yaml";

/// The AWS SDK configuration every client of the project starts from (the S3 storage, the
/// syncer's event queue): the standard chain — `AWS_*` variables, shared profiles, web identity
/// (IRSA), container and instance roles; retries from `AWS_MAX_ATTEMPTS`/`AWS_RETRY_MODE`, the
/// SDK's standard mode otherwise — with a default region, connect and operation timeouts, the
/// proof of concept's keys when given, and `endpoint_url` when one is forced.
pub async fn sdk_config(
    opts: &S3Options,
    endpoint_url: Option<&str>,
    operation_timeout: Duration,
) -> aws_config::SdkConfig {
    let region = RegionProviderChain::default_provider().or_else(Region::new(DEFAULT_REGION));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(operation_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(timeouts);
    if let (Some(id), Some(secret)) = (
        opts.legacy.access_key_id.as_deref(),
        opts.legacy.secret_access_key.as_deref(),
    ) {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            None,
            None,
            "MINIO_ACCESS_KEY_ID",
        ));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// A bucket and prefix reached through the AWS SDK.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// For logs only: the endpoint in use when one is configured.
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    list_page_size: Option<i32>,
}

impl S3Storage {
    pub(super) async fn connect(bucket: String, prefix: String, opts: &S3Options) -> S3Storage {
        let legacy_endpoint = opts.legacy.endpoint_url();
        let sdk = sdk_config(opts, legacy_endpoint.as_deref(), OPERATION_TIMEOUT).await;

        let endpoint = legacy_endpoint
            .or_else(|| env_endpoint("AWS_ENDPOINT_URL_S3"))
            .or_else(|| sdk.endpoint_url().map(str::to_owned));
        // Self-hosted stores are usually reached by IP or a name without wildcard DNS, so a
        // custom endpoint implies path style unless the operator says otherwise.
        let path_style = opts.force_path_style.unwrap_or(endpoint.is_some());
        let config = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            .build();
        S3Storage {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket,
            prefix,
            endpoint,
            region: sdk.region().map(ToString::to_string),
            path_style: Some(path_style),
            list_page_size: None,
        }
    }

    pub(super) fn from_client(
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    ) -> S3Storage {
        S3Storage {
            client,
            bucket,
            prefix,
            endpoint: None,
            region: None,
            path_style: None,
            list_page_size: None,
        }
    }

    /// Asks for at most `n` keys per listing page (the server's default is 1000). Listing
    /// still returns everything; this only changes how many requests it takes.
    pub fn set_list_page_size(&mut self, n: i32) {
        self.list_page_size = Some(n.max(1));
    }

    /// The same bucket and client one level down: `<prefix><name>/`.
    pub(super) fn child(&self, name: &str) -> S3Storage {
        let mut child = self.clone();
        child.prefix = format!("{}{name}/", self.prefix);
        child
    }

    pub(super) fn url(&self) -> StorageUrl {
        StorageUrl::S3 {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
    }

    fn location(&self) -> String {
        self.url().to_string()
    }

    pub(super) fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.endpoint {
            Some(endpoint) => parts.push(format!("endpoint {endpoint}")),
            None => parts.push("AWS S3".to_owned()),
        }
        if let Some(region) = &self.region {
            parts.push(format!("region {region}"));
        }
        match self.path_style {
            Some(true) => parts.push("path-style".to_owned()),
            Some(false) => parts.push("virtual-hosted-style".to_owned()),
            None => {}
        }
        format!("{} ({})", self.location(), parts.join(", "))
    }

    pub(super) async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // The delimiter keeps "sub-directories" out of the answer: only direct children
            // of the prefix are cluster documents.
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .delimiter("/")
                .set_continuation_token(token.clone());
            if !self.prefix.is_empty() {
                request = request.prefix(&self.prefix);
            }
            if let Some(n) = self.list_page_size {
                request = request.max_keys(n);
            }
            let page = request.send().await.map_err(|err| {
                let f = Failure::from_sdk(err);
                StorageError::List {
                    location: self.location(),
                    detail: f.detail,
                    class: f.class,
                    source: f.source,
                }
            })?;
            for item in page.contents() {
                let Some(full_key) = item.key() else { continue };
                let Some(key) = full_key.strip_prefix(&self.prefix) else {
                    continue;
                };
                // Servers that ignore the delimiter, and "folder" marker objects.
                if key.is_empty() || key.contains('/') {
                    continue;
                }
                let size = item.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                let last_modified = item
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok());
                let etag = match item.e_tag() {
                    Some(etag) if !etag.is_empty() => etag.to_owned(),
                    // NB: a store that omits ETags still has to show changes; size and time
                    // are the best stand-in. A conditional GET with it simply fetches.
                    _ => synthetic_etag(size, last_modified),
                };
                objects.push(ObjectInfo {
                    key: key.to_owned(),
                    etag,
                    size,
                    last_modified,
                });
            }
            let next = page.next_continuation_token().map(str::to_owned);
            let truncated = page.is_truncated().unwrap_or(false);
            match next {
                Some(next) if truncated => {
                    // A server that hands back the same token would loop forever.
                    if token.as_deref() == Some(next.as_str()) {
                        return Err(StorageError::List {
                            location: self.location(),
                            detail: "the server returned the same continuation token twice"
                                .to_owned(),
                            class: ErrorClass::Service,
                            source: "repeated continuation token".into(),
                        });
                    }
                    token = Some(next);
                }
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    pub(super) async fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        max_bytes: Option<u64>,
    ) -> Result<Fetched, StorageError> {
        let error = |f: Failure| StorageError::Get {
            location: self.location(),
            key: key.to_owned(),
            detail: f.detail,
            class: f.class,
            source: f.source,
        };
        let too_large = |size: u64, limit: u64| StorageError::TooLarge {
            location: self.location(),
            key: key.to_owned(),
            size,
            limit,
        };
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .set_if_none_match(if_none_match.map(str::to_owned));
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return get_failed(err).map_err(error),
        };
        // Some stores ignore If-None-Match and answer 200: same ETag, same content, and the
        // body need not be read at all.
        if let (Some(wanted), Some(etag)) = (if_none_match, response.e_tag())
            && wanted == etag
        {
            return Ok(Fetched::NotModified);
        }
        if let (Some(limit), Some(length)) = (max_bytes, response.content_length()) {
            let length = u64::try_from(length).unwrap_or(0);
            if length > limit {
                // Dropping the response abandons the body without reading it.
                return Err(too_large(length, limit));
            }
        }
        let etag = response.e_tag().unwrap_or_default().to_owned();
        let last_modified = response
            .last_modified()
            .and_then(|t| SystemTime::try_from(*t).ok());
        let metadata = lowercase_keys(response.metadata());
        let bytes = match read_body(response.body, max_bytes).await {
            Ok(bytes) => bytes,
            Err(Body::TooLarge { read, limit }) => return Err(too_large(read, limit)),
            Err(Body::Broken(failure)) => return Err(error(failure)),
        };
        let etag = if etag.is_empty() {
            format!("\"{}\"", ksd_shared::content_hash(&bytes))
        } else {
            etag
        };
        Ok(Fetched::Object(Object {
            bytes,
            etag,
            last_modified,
            metadata,
        }))
    }

    pub(super) async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &BTreeMap<String, String>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StorageError> {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .content_type(CONTENT_TYPE)
            .body(ByteStream::from(bytes));
        if !metadata.is_empty() {
            request = request.set_metadata(Some(metadata));
        }
        request = match condition {
            PutCondition::None => request,
            PutCondition::IfMatch(etag) => request.if_match(etag),
            PutCondition::IfAbsent => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(output) => Ok(PutOutcome::Written {
                etag: output.e_tag().map(str::to_owned),
            }),
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                // 412 is the answer to a failed If-Match / If-None-Match; AWS answers 409
                // ConditionalRequestConflict when a concurrent conditional write won the race,
                // which for the caller is the same: re-read, then decide again.
                if status == Some(412)
                    || (status == Some(409) && err.code() == Some("ConditionalRequestConflict"))
                {
                    return Ok(PutOutcome::PreconditionFailed);
                }
                let f = Failure::from_sdk(err);
                Err(StorageError::Put {
                    location: self.location(),
                    key: key.to_owned(),
                    detail: f.detail,
                    class: f.class,
                    source: f.source,
                })
            }
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .send()
            .await
            .map(|_| ())
            .map_err(|err| {
                let f = Failure::from_sdk(err);
                StorageError::Delete {
                    location: self.location(),
                    key: key.to_owned(),
                    detail: f.detail,
                    class: f.class,
                    source: f.source,
                }
            })
    }
}

/// An endpoint variable that is set, unless the SDK is told to ignore configured endpoints.
fn env_endpoint(name: &str) -> Option<String> {
    let ignore = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if ignore {
        return None;
    }
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn synthetic_etag(size: u64, last_modified: Option<SystemTime>) -> String {
    let nanos = last_modified
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("W/\"{size}-{nanos}\"")
}

/// An SDK error reduced to what the caller and the logs need.
/// A GET that failed: some failures are answers (not modified, missing).
fn get_failed(err: SdkError<GetObjectError, HttpResponse>) -> Result<Fetched, Failure> {
    let status = err.raw_response().map(|r| r.status().as_u16());
    // NB: the SDK has no modelled error for 304: it surfaces as an unhandled service error, and
    // only the raw status tells it apart.
    if status == Some(304) {
        return Ok(Fetched::NotModified);
    }
    let no_such_key = err.as_service_error().is_some_and(|e| e.is_no_such_key());
    // A GET error body may be absent (HEAD-like answers), so a bare 404 also means a missing
    // key, unless the server said the bucket is missing.
    if no_such_key || (status == Some(404) && err.code() != Some("NoSuchBucket")) {
        return Ok(Fetched::Missing);
    }
    Err(Failure::from_sdk(err))
}

/// User metadata with lower-case keys (stores differ in the case they answer with).
fn lowercase_keys(metadata: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    metadata
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Why a body was not read to the end.
enum Body {
    TooLarge { read: u64, limit: u64 },
    Broken(Failure),
}

/// Reads a GET's body. The length header is a promise, not a guarantee (chunked answers have
/// none): the limit is enforced on what actually arrives as well.
async fn read_body(mut body: ByteStream, max_bytes: Option<u64>) -> Result<Vec<u8>, Body> {
    let mut bytes = Vec::new();
    loop {
        match body.try_next().await {
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk);
                if let Some(limit) = max_bytes
                    && bytes.len() as u64 > limit
                {
                    return Err(Body::TooLarge {
                        read: bytes.len() as u64,
                        limit,
                    });
                }
            }
            Ok(None) => return Ok(bytes),
            Err(err) => {
                return Err(Body::Broken(Failure {
                    detail: format!("reading the body broke off: {}", error_chain(&err)),
                    class: ErrorClass::Unreachable,
                    source: Box::new(err),
                }));
            }
        }
    }
}

struct Failure {
    detail: String,
    class: ErrorClass,
    source: BoxError,
}

impl Failure {
    fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let (class, detail) = match &err {
            SdkError::TimeoutError(_) => (ErrorClass::Timeout, "timed out".to_owned()),
            SdkError::DispatchFailure(failure) => {
                let detail = error_chain(&err);
                let class = if failure.is_timeout() {
                    ErrorClass::Timeout
                } else if failure.is_io() {
                    ErrorClass::Unreachable
                } else if detail.contains("credential") {
                    // NB: a missing or failing credentials provider surfaces as an "other"
                    // dispatch failure; its error types are not re-exported, so the message
                    // is all there is to go by.
                    ErrorClass::Credentials
                } else {
                    ErrorClass::Other
                };
                (class, detail)
            }
            // A response that could not be read or parsed, e.g. a connection cut mid-answer.
            SdkError::ResponseError(_) => (ErrorClass::Unreachable, error_chain(&err)),
            SdkError::ServiceError(_) => {
                let code = err.code();
                let class = match (code, status) {
                    (Some("NoSuchBucket"), _) => ErrorClass::NoSuchBucket,
                    (
                        Some(
                            "AccessDenied"
                            | "InvalidAccessKeyId"
                            | "SignatureDoesNotMatch"
                            | "ExpiredToken"
                            | "InvalidToken",
                        ),
                        _,
                    )
                    | (_, Some(401 | 403)) => ErrorClass::AccessDenied,
                    _ => ErrorClass::Service,
                };
                let mut detail = match status {
                    Some(status) => format!("HTTP {status}"),
                    None => "service error".to_owned(),
                };
                if let Some(code) = code {
                    detail.push_str(&format!(" {code}"));
                }
                if let Some(message) = err.message() {
                    detail.push_str(&format!(": {message}"));
                }
                (class, detail)
            }
            _ => (ErrorClass::Other, error_chain(&err)),
        };
        Failure {
            detail,
            class,
            source: Box::new(err),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use std::io;

    type ListError = SdkError<ListObjectsV2Error, HttpResponse>;

    fn io_error(message: &str) -> BoxError {
        Box::new(io::Error::other(message.to_owned()))
    }

    #[test]
    fn connection_failures_are_unreachable_with_the_cause_on_one_line() {
        let err: ListError = SdkError::dispatch_failure(ConnectorError::io(Box::new(
            io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused"),
        )));
        let f = Failure::from_sdk(err);
        assert_eq!(f.class, ErrorClass::Unreachable);
        assert_eq!(f.detail, "dispatch failure: io error: Connection refused");
    }

    #[test]
    fn timeouts_are_told_apart() {
        let err: ListError = SdkError::dispatch_failure(ConnectorError::timeout(io_error("slow")));
        assert_eq!(Failure::from_sdk(err).class, ErrorClass::Timeout);
        let err: ListError = SdkError::timeout_error(io_error("operation timeout"));
        assert_eq!(Failure::from_sdk(err).class, ErrorClass::Timeout);
    }

    #[test]
    fn missing_credentials_are_labelled() {
        let err: ListError = SdkError::dispatch_failure(ConnectorError::other(
            io_error("no credentials found in chain.\n  Environment: not set"),
            None,
        ));
        let f = Failure::from_sdk(err);
        assert_eq!(f.class, ErrorClass::Credentials);
        assert!(!f.detail.contains('\n'), "{}", f.detail);
    }

    #[test]
    fn chains_skip_repeated_messages() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "wrapped: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Outer(io::Error::other("inner"));
        assert_eq!(error_chain(&err), "wrapped: inner");
    }

    #[test]
    fn synthetic_etags_change_with_size_and_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let a = synthetic_etag(1, Some(t));
        assert_ne!(a, synthetic_etag(2, Some(t)));
        assert_ne!(a, synthetic_etag(1, Some(t + Duration::from_millis(1))));
    }
}
