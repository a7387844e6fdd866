// Package units parses and formats the byte sizes and rates used everywhere in
// netshape: "2MB", "1.5GiB", "500KB/s", "10Mbit/s". KB is 1000 bytes, KiB 1024.
//
// It is its own package (outside the layout in DEVELOPERS.md) so that the CLI, the
// TOML config, policy and shaper all parse one way, with one set of errors.
package units
