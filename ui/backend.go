package ui

import (
	"errors"
	"net/url"

	"github.com/netshape/netshape/control"
	"github.com/netshape/netshape/flow"
	"github.com/netshape/netshape/policy"
	"github.com/netshape/netshape/shaper"
	"github.com/netshape/netshape/store"
)

// Backend is what the dashboard and /metrics read and change; the daemon
// implements it with the same functions its control API uses.
type Backend interface {
	Status() control.Status
	// Flows returns the live flows, and with closed the recently closed too.
	Flows(closed bool) []flow.Flow
	Pending() []control.Pending
	// Answer answers a pending question; ErrNotFound when it is gone,
	// ErrBadRequest when the answer is invalid.
	Answer(id int64, a control.Answer) (control.AnswerResult, error)
	Rules() []policy.Rule
	Quotas() []Quota
	// Usage totals history as GET /v1/usage does with the query q (by, from,
	// to, app, host, iface, category, limit); ErrBadRequest for a bad query.
	Usage(q url.Values) ([]store.UsageTotal, error)
	Iface() (control.IfaceReport, error)
}

// Quota is a quota with its live counters and its scope in words, as GET
// /v1/quotas shows it.
type Quota struct {
	shaper.QuotaStatus
	ScopeText string `json:"scope_text"`
}

// Sentinel errors a Backend wraps so the server picks the HTTP status.
var (
	ErrNotFound   = errors.New("not found")
	ErrBadRequest = errors.New("bad request")
	// ErrRemote is returned for a non-loopback listen address without
	// AllowRemote.
	ErrRemote = errors.New("the dashboard listens on loopback only")
)
