/* A library leak_cases.c loads with dlopen: its global is the only place case 15's block is
 * kept (the block is allocated in leak_cases.c, at its own site). */
void *volatile g_plugin_slot;

void leak_plugin_set(void *p) { g_plugin_slot = p; }
