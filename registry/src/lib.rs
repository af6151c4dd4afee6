//! dockless-registry (placeholder, filled by its issue).
