//! NVMe (placeholder).
