package corefile

import "sort"

// Plugins returns the names of the plugins the parser accepts, sorted.
func Plugins() []string {
	names := make([]string, 0, len(plugins))
	for name := range plugins {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
