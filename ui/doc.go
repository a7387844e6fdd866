// Package ui is netshape's local web dashboard and its Prometheus metrics.
//
// A Tracker turns successive snapshots of the proxy's flows (live and
// recently closed) into per-app, per-host and per-interface rates and
// cumulative byte counters with bounded label sets. A Server serves the
// dashboard (embedded HTML, JavaScript and SVG charts; nothing is fetched from
// the network) and a JSON API over a Backend, which the daemon implements, and
// /metrics in the Prometheus text format. Every request needs the token the
// daemon prints at start; requests that change state also need it in a
// header (a cookie alone is not enough) and must come from the same origin.
package ui
