//! virtio-net (placeholder, filled in below).
