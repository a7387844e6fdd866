//go:build !linux

package main

// runCgroup: cgroups are Linux only; elsewhere netshape follows the process tree.
type runCgroup struct{}

func joinOwnCgroup() *runCgroup { return nil }

func (g *runCgroup) path() string { return "" }
func (g *runCgroup) kill()        {}
func (g *runCgroup) remove()      {}
