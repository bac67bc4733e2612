//! Given/when/then test kit (being written).
