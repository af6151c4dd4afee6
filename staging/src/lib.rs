//! dockless-staging (placeholder, filled by its issue).
