//! dockless-runtime (placeholder, filled by its issue).
