//! Files people upload with their forms, kept in an object store (`object_store`): a local
//! folder by default (`<data>/uploads`), or any S3-compatible bucket (`uploads.s3_bucket`),
//! spoken to over the HTTP client the rest of Civitas uses (reqwest with rustls). Each file
//! is stored under its application and a random name (see [`key_prefix`]), never the name the person gave (which is kept beside, for showing), with its
//! size, type and SHA-256; the answer to a file question is that record.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value, json};

use crate::{Services, ServicesError};

/// The largest file accepted.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;

/// The types accepted: documents and photos.
pub const TYPES: [&str; 4] = ["application/pdf", "image/jpeg", "image/png", "image/heic"];

/// Opens the local folder store.
pub fn local_store(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, ServicesError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ServicesError::Invalid(format!("cannot make {}: {e}", dir.display())))?;
    let s = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| ServicesError::Invalid(format!("cannot open {}: {e}", dir.display())))?;
    Ok(Arc::new(s))
}

/// Opens an S3-compatible bucket and checks that it answers (lists it): a wrong name, key
/// or address stops the server at start, saying which, rather than at someone's upload.
pub async fn s3_store(
    b: &civitas_core::config::S3Bucket,
) -> Result<Arc<dyn ObjectStore>, ServicesError> {
    use object_store::aws::AmazonS3Builder;
    // The usual AWS_* variables and the machine's role, unless a key is configured.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&b.bucket)
        .with_region(&b.region)
        .with_http_connector(Connector)
        .with_retry(object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(20),
            ..Default::default()
        });
    if let Some(endpoint) = &b.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let (Some(id), Some(secret)) = (&b.access_key_id, &b.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    let where_ = format!(
        "the uploads bucket `{}` at {}{}",
        b.bucket,
        b.endpoint.as_deref().unwrap_or("AWS S3"),
        if b.access_key_id.is_none() {
            " (with no uploads.s3_access_key_id, the key is sought in AWS_* variables and the machine's role)"
        } else {
            ""
        }
    );
    let store = builder
        .build()
        .map_err(|e| ServicesError::Files(format!("cannot open {where_}: {e}")))?;
    store
        .list_with_delimiter(Some(&Path::from("civitas")))
        .await
        .map_err(|e| ServicesError::Files(format!("{where_} does not answer: {e}")))?;
    Ok(Arc::new(store))
}

/// `object_store`'s HTTP client for S3: reqwest, as everywhere else in Civitas.
#[derive(Debug)]
struct Connector;

impl object_store::client::HttpConnector for Connector {
    fn connect(
        &self,
        _: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(object_store::client::HttpClient::new(Client(client)))
    }
}

#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl object_store::client::HttpService for Client {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string()).map_err(|e| {
            object_store::client::HttpError::new(object_store::client::HttpErrorKind::Request, e)
        })?;
        let mut out = reqwest::Request::new(parts.method, url);
        *out.headers_mut() = parts.headers;
        *out.body_mut() = Some(reqwest::Body::wrap(body));
        let got = self.0.execute(out).await.map_err(http_error)?;
        let (parts, body) = http::Response::<reqwest::Body>::from(got).into_parts();
        Ok(object_store::client::HttpResponse::from_parts(
            parts,
            object_store::client::HttpResponseBody::new(body.map_err(http_error)),
        ))
    }
}

/// Which of `object_store`'s kinds a failed call is: connecting and timing out are retried.
fn http_error(e: reqwest::Error) -> object_store::client::HttpError {
    use object_store::client::{HttpError, HttpErrorKind};
    let kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else if e.is_request() || e.is_body() {
        HttpErrorKind::Request
    } else {
        HttpErrorKind::Unknown
    };
    HttpError::new(kind, e.without_url())
}

/// Where an application's files go: `{ab}/{application}.{file}`, in one of 256 folders
/// named by the application id's first two characters. A folder per application would make
/// a local store create a directory for nearly every upload, which costs a file system more
/// than the file itself; in a bucket the key still starts with a prefix of its own.
fn key_prefix(application_id: &str) -> String {
    let fan = application_id.get(..2).unwrap_or(application_id);
    format!("{fan}/{application_id}.")
}

/// Whether `key` names a file of this application (keys made before the fan-out folders
/// were `{application}/{file}`).
pub(crate) fn is_key_of(application_id: &str, key: &str) -> bool {
    (key.starts_with(&key_prefix(application_id)) || key.starts_with(&format!("{application_id}/")))
        && !key.contains("..")
}

fn store_error(e: object_store::Error) -> ServicesError {
    ServicesError::Files(e.to_string())
}

impl Services {
    /// Keeps an uploaded file for an application and returns the answer that names it.
    pub async fn put_upload(
        &self,
        application_id: &str,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, ServicesError> {
        if bytes.is_empty() {
            return Err(ServicesError::Invalid("The file is empty.".into()));
        }
        if bytes.len() > MAX_BYTES {
            return Err(ServicesError::Invalid(
                "The file is larger than 10 MB.".into(),
            ));
        }
        if !TYPES.contains(&content_type) {
            return Err(ServicesError::Invalid(
                "The file must be a PDF, JPEG, PNG or HEIC.".into(),
            ));
        }
        let store = self.uploads()?;
        let key = format!("{}{}", key_prefix(application_id), uuid::Uuid::new_v4());
        let digest = civitas_ledger::event::hex(&crate::sha256(&bytes));
        let size = bytes.len();
        store
            .put(&Path::from(key.as_str()), PutPayload::from(bytes))
            .await
            .map_err(store_error)?;
        let name: String = name
            .chars()
            .filter(|c| !c.is_control() && *c != '/' && *c != '\\')
            .take(120)
            .collect();
        Ok(json!({"key": key, "name": name, "size": size, "type": content_type, "sha256": digest}))
    }

    /// An uploaded file's bytes, by its answer's key (which must be this application's).
    pub async fn get_upload(
        &self,
        application_id: &str,
        key: &str,
    ) -> Result<Vec<u8>, ServicesError> {
        if !is_key_of(application_id, key) {
            return Err(ServicesError::NotFound("no such file".into()));
        }
        let store = self.uploads()?;
        let got = store.get(&Path::from(key)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => ServicesError::NotFound("no such file".into()),
            e => store_error(e),
        })?;
        Ok(got.bytes().await.map_err(store_error)?.to_vec())
    }

    fn uploads(&self) -> Result<Arc<dyn ObjectStore>, ServicesError> {
        self.uploads
            .clone()
            .ok_or_else(|| ServicesError::Invalid("This server keeps no uploads.".into()))
    }

    /// Uses this object store for uploads.
    pub fn with_uploads(mut self, store: Arc<dyn ObjectStore>) -> Services {
        self.uploads = Some(store);
        self
    }
}
