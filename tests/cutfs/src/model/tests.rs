//! Unit tests of the durability rules, without a mount.

use super::*;
