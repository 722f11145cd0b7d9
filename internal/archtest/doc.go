// Package archtest holds the test that enforces the dependency rules of DESIGN.md §2 over the
// whole module. It has no code of its own.
package archtest
