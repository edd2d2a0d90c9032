//! The toolstack's image cache (SPEC.md MGMT-4): guest images held in the
//! driver domain by content (SHA-256), so that creating 50 domains from one
//! image sends it over the management line once.
//!
//! An upload fills an entry front to back (`IMAGE_PUT` at offset = bytes
//! held); when the last byte arrives the digest is checked, and a mismatch
//! drops the entry. The cache holds at most [`MAX_CACHE_BYTES`]: the least
//! recently used complete images go first, and at most one upload is in
//! progress (a new one replaces a stale partial one). Pure and host-tested.

use alloc::vec::Vec;

use hypercall_abi::mgmt::{sha256, ImageRef, ImageStatus};

/// Most bytes of images held (the driver domain's heap is small).
pub const MAX_CACHE_BYTES: usize = 1536 << 10;
/// Largest image accepted.
pub const MAX_IMAGE_BYTES: u64 = 1024 << 10;

struct Entry {
    digest: [u8; 32],
    total: u64,
    bytes: Vec<u8>,
    complete: bool,
    last_use: u64,
}

/// The cache.
pub struct ImageCache {
    entries: Vec<Entry>,
    clock: u64,
    limit: usize,
}

impl Default for ImageCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageCache {
    /// An empty cache of [`MAX_CACHE_BYTES`].
    pub fn new() -> Self {
        Self::with_limit(MAX_CACHE_BYTES)
    }

    /// An empty cache holding at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            entries: Vec::new(),
            clock: 0,
            limit,
        }
    }

    fn status(&self, digest: &[u8; 32]) -> ImageStatus {
        let entry = self.entries.iter().find(|e| &e.digest == digest);
        ImageStatus {
            have: entry.map_or(0, |e| e.bytes.len() as u64),
            complete: u32::from(entry.is_some_and(|e| e.complete)),
            cached_images: self.entries.iter().filter(|e| e.complete).count() as u32,
        }
    }

    /// `IMAGE_QUERY`: what is held of `r`.
    pub fn query(&mut self, r: &ImageRef) -> ImageStatus {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.entries.iter_mut().find(|e| e.digest == r.digest) {
            e.last_use = clock;
        }
        self.status(&r.digest)
    }

    /// `IMAGE_PUT`: `data` at `r.offset` of image `r`.
    pub fn put(&mut self, r: &ImageRef, data: &[u8]) -> Result<ImageStatus, &'static str> {
        if r.total_len == 0 || r.total_len > MAX_IMAGE_BYTES {
            return Err("image too large for the driver domain's cache (at most 1024 KiB)");
        }
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.iter().any(|e| e.digest == r.digest) {
            if r.offset != 0 {
                return Err("image upload out of order");
            }
            // One upload at a time: a stale partial one goes.
            self.entries.retain(|e| e.complete);
            self.make_room(r.total_len as usize);
            self.entries.push(Entry {
                digest: r.digest,
                total: r.total_len,
                bytes: Vec::new(),
                complete: false,
                last_use: clock,
            });
        }
        let Some(index) = self.entries.iter().position(|e| e.digest == r.digest) else {
            return Err("image upload lost");
        };
        let entry = &mut self.entries[index];
        entry.last_use = clock;
        if entry.complete {
            return Ok(self.status(&r.digest));
        }
        let end = r.offset.checked_add(data.len() as u64);
        if entry.total != r.total_len
            || r.offset != entry.bytes.len() as u64
            || end.is_none_or(|end| end > entry.total)
        {
            return Err("image upload out of order");
        }
        entry.bytes.extend_from_slice(data);
        if entry.bytes.len() as u64 == entry.total {
            if sha256(&entry.bytes) != entry.digest {
                self.entries.remove(index);
                return Err("image upload corrupted: its SHA-256 does not match");
            }
            entry.complete = true;
        }
        Ok(self.status(&r.digest))
    }

    /// Drops least recently used complete images until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: usize) {
        loop {
            let held: usize = self.entries.iter().map(|e| e.total as usize).sum();
            if held + incoming <= self.limit {
                return;
            }
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.complete)
                .min_by_key(|(_, e)| e.last_use)
                .map(|(i, _)| i)
            else {
                return;
            };
            self.entries.remove(oldest);
        }
    }

    /// A complete image.
    pub fn get(&self, digest: &[u8; 32]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| &e.digest == digest && e.complete)
            .map(|e| e.bytes.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(image: &[u8], offset: u64) -> ImageRef {
        ImageRef {
            digest: sha256(image),
            total_len: image.len() as u64,
            offset,
        }
    }

    fn upload(cache: &mut ImageCache, image: &[u8]) -> ImageStatus {
        let mut status = cache.query(&reference(image, 0));
        while status.complete == 0 {
            let at = status.have as usize;
            let end = (at + 1000).min(image.len());
            status = cache
                .put(&reference(image, at as u64), &image[at..end])
                .expect("put");
        }
        status
    }

    #[test]
    fn uploads_once_then_hits() {
        let image: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut cache = ImageCache::new();
        assert_eq!(cache.query(&reference(&image, 0)).have, 0);
        let status = upload(&mut cache, &image);
        assert_eq!((status.have, status.cached_images), (5000, 1));
        assert_eq!(cache.get(&sha256(&image)), Some(image.as_slice()));
        let again = cache.query(&reference(&image, 0));
        assert_eq!(again.complete, 1);
    }

    #[test]
    fn refuses_out_of_order_corrupt_and_oversized() {
        let image = [7u8; 3000];
        let mut cache = ImageCache::new();
        assert!(cache.put(&reference(&image, 1000), &image[..10]).is_err());
        cache
            .put(&reference(&image, 0), &image[..1000])
            .expect("first");
        assert!(cache.put(&reference(&image, 2000), &image[..10]).is_err());
        // Bytes that do not hash to the digest are dropped at the end.
        let mut bad = reference(&image, 1000);
        bad.offset = 1000;
        cache.put(&bad, &[1u8; 1000]).expect("middle");
        bad.offset = 2000;
        assert!(cache.put(&bad, &[1u8; 1000]).is_err());
        assert_eq!(cache.get(&sha256(&image)), None);
        assert_eq!(cache.query(&reference(&image, 0)).have, 0);
        let mut huge = reference(&image, 0);
        huge.total_len = MAX_IMAGE_BYTES + 1;
        assert!(cache.put(&huge, &image).is_err());
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = ImageCache::with_limit(2500);
        let a = alloc::vec![1u8; 1000];
        let b = alloc::vec![2u8; 1000];
        let c = alloc::vec![3u8; 1000];
        upload(&mut cache, &a);
        upload(&mut cache, &b);
        cache.query(&reference(&a, 0)); // a is used again
        upload(&mut cache, &c);
        assert!(cache.get(&sha256(&a)).is_some());
        assert!(cache.get(&sha256(&b)).is_none());
        assert!(cache.get(&sha256(&c)).is_some());
    }
}
