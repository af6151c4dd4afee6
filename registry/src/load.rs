//! load (todo)
