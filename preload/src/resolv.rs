//! Name resolution for the virtual network (placeholder).
