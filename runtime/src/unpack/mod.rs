//! unpack (to be written).
