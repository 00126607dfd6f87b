//! Files people upload with their forms, kept in an object store (`object_store`): a local
//! folder by default (`<data>/uploads`). Each file is stored under its application and a
//! random name, never the name the person gave (which is kept beside, for showing), with its
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
        let key = format!("{application_id}/{}", uuid::Uuid::new_v4());
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
        if !key.starts_with(&format!("{application_id}/")) || key.contains("..") {
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
