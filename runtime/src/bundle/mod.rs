//! bundle (to be written).
