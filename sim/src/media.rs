//! Uploaded media (`POST /media/upload`) and the files behind robot `downloadCode`s, bounded by
//! total size. Files are served back at `/_sim/files/{id}`, the `downloadUrl` the simulator
//! hands out.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use serde::Serialize;

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFile {
    /// The `media_id` (also the path segment of its download URL).
    pub media_id: String,
    /// `image`, `file`, `voice` or `video`.
    pub media_type: String,
    /// The uploaded file name.
    pub file_name: String,
    /// Size in bytes.
    pub size: usize,
    /// The content.
    #[serde(skip)]
    pub bytes: Bytes,
}

/// Files by media id, plus download codes pointing at them.
#[derive(Debug)]
pub struct MediaStore {
    files: HashMap<String, MediaFile>,
    order: VecDeque<String>,
    total_bytes: usize,
    max_total_bytes: usize,
    download_codes: HashMap<String, String>,
}

impl MediaStore {
    /// A store holding at most `max_total_bytes` of file content.
    pub fn new(max_total_bytes: usize) -> Self {
        Self {
            files: HashMap::new(),
            order: VecDeque::new(),
            total_bytes: 0,
            max_total_bytes,
            download_codes: HashMap::new(),
        }
    }

    /// Stores a file, evicting the oldest ones (and their download codes) to make room.
    pub fn put(&mut self, file: MediaFile) {
        while self.total_bytes + file.size > self.max_total_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.files.remove(&oldest) {
                self.total_bytes -= old.size;
            }
            self.download_codes
                .retain(|_, media_id| *media_id != oldest);
        }
        self.total_bytes += file.size;
        self.order.push_back(file.media_id.clone());
        self.files.insert(file.media_id.clone(), file);
    }

    /// Makes `code` a download code for `media_id`.
    pub fn add_download_code(&mut self, code: String, media_id: String) {
        self.download_codes.insert(code, media_id);
    }

    /// The file behind a download code.
    pub fn by_download_code(&self, code: &str) -> Option<&MediaFile> {
        self.files.get(self.download_codes.get(code)?)
    }

    /// The file with this media id.
    pub fn get(&self, media_id: &str) -> Option<&MediaFile> {
        self.files.get(media_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, size: usize) -> MediaFile {
        MediaFile {
            media_id: id.into(),
            media_type: "file".into(),
            file_name: "a.bin".into(),
            size,
            bytes: Bytes::from(vec![0; size]),
        }
    }

    #[test]
    fn oldest_files_and_their_codes_go_when_the_byte_budget_is_spent() {
        let mut store = MediaStore::new(10);
        store.put(file("a", 6));
        store.add_download_code("code-a".into(), "a".into());
        store.put(file("b", 6));
        assert!(store.get("a").is_none());
        assert!(store.by_download_code("code-a").is_none());
        assert!(store.get("b").is_some());
    }
}
