//! [`Cpu`](crate::Cpu) over a Linux signal frame's `ucontext_t` (to come).
