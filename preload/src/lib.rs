//! libioth.so
