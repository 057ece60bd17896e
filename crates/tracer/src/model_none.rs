//! The replay model's hooks without std (the freestanding agent): no model, so every hook
//! does nothing and no descriptor is diverted. Same signatures as `model.rs`, which needs
//! the replay crate and the environment.

/// The length of a diverted path buffer.
pub(crate) const DIVERTED_PATH_MAX: usize = 1;

pub(crate) fn init_from_env() {}

pub(crate) fn on_map(_map_id: u64, _phys: u64, _path: &[u8], _off: u64) {}

pub(crate) fn on_continue(_id: u64, _from: u64) {}

#[inline]
pub(crate) fn after_read(_map_id: u64, _addr: u64, _buf: &mut [u8], _pc: u64) {}

#[inline]
pub(crate) fn after_write(_map_id: u64, _addr: u64, _data: &[u8], _pc: u64) {}

#[inline]
pub(crate) fn before_rmw(_map_id: u64, _addr: u64, _at: u64, _width: u8, _pc: u64) {}

#[inline]
pub(crate) fn after_rmw(_map_id: u64, _addr: u64, _width: u8, _new: u64, _pc: u64) {}

#[inline]
pub(crate) fn before_step(_r: &crate::Region, _addr: u64, _width: u8, _dir: u8, _pc: u64) {}

#[inline]
pub(crate) fn after_step(_map_id: u64, _addr: u64, _width: u8, _dir: u8, _value: u64, _pc: u64) {}

pub(crate) fn diverted_path(_fd: i32, _buf: &mut [u8; DIVERTED_PATH_MAX]) -> Option<usize> {
    None
}
