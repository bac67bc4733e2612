//! sled 0.34 on cutfs.
