package control

import "time"

// Status is GET /v1/status.
type Status struct {
	Running  bool      `json:"running"`
	PID      int       `json:"pid"`
	Version  string    `json:"version"`
	Backend  string    `json:"backend"`
	Listen   []string  `json:"listen"`
	Started  time.Time `json:"started"`
	StateDir string    `json:"state_dir"`
	Default  string    `json:"default_action,omitempty"`
	Active   int       `json:"active_flows"`
	Total    int64     `json:"total_flows"`
	Denied   int64     `json:"denied_flows"`
	Failed   int64     `json:"failed_flows"`
	BytesIn  int64     `json:"bytes_in"`
	BytesOut int64     `json:"bytes_out"`
	Pending  int       `json:"pending"`
	Rules    int       `json:"rules"`
	Warnings []string  `json:"warnings,omitempty"`
}
