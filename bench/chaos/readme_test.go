package chaos

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEListsEveryScenario: the README's scenario table is where a
// reader learns what make chaos injects, and it fell behind the code (the
// quit-* scenarios ran for days without a row). Every scenario must have
// a row naming it, and every name in the table's first column must be a
// scenario, so a renamed or removed one does not linger there.
func TestREADMEListsEveryScenario(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := scenarioTable(t, string(b))
	for _, sc := range Scenarios {
		if !listed[sc.Name] {
			t.Errorf("README.md's scenario table (under \"| scenario | fault |\") has no row for %q: add one saying what it injects", sc.Name)
		}
	}
	for name := range listed {
		if _, ok := Find(name); !ok {
			t.Errorf("README.md's scenario table lists %q, which is no scenario (chaos -list)", name)
		}
	}
}

// scenarioTable returns the names in backquotes in the first column of
// the table headed "| scenario | fault |"; a row may name several
// scenarios that share a description.
func scenarioTable(t *testing.T, readme string) map[string]bool {
	t.Helper()
	_, table, ok := strings.Cut(readme, "\n| scenario | fault |\n")
	if !ok {
		t.Fatal(`README.md has no table headed "| scenario | fault |"`)
	}
	quoted := regexp.MustCompile("`([^`]+)`")
	names := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			break // the table ends at its first line that is not a row
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.Trim(cells[1], "- ") == "" {
			continue // the header's separator
		}
		for _, m := range quoted.FindAllStringSubmatch(cells[1], -1) {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("README.md's scenario table names no scenario")
	}
	return names
}
