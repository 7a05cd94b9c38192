package corefile

import "sort"

// refusedPlugins are recognised only to be refused with a reason.
var refusedPlugins = map[string]bool{"trace": true}

// Plugins returns the names of the plugins the parser accepts, sorted.
func Plugins() []string {
	names := make([]string, 0, len(plugins))
	for name := range plugins {
		if !refusedPlugins[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}
