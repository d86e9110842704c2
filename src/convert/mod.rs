//! The copy engine (placeholder).
