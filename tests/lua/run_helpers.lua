-- Loads the plug-in against fake_darktable.lua and runs one helper on the arguments in the environment; prints
-- the result. Usage: lua5.4 run_helpers.lua PLUGIN.lua HELPER (inputs in env: STYLE_XML, HISTORY, ARG)
local here = arg[0]:match("^(.*)/[^/]*$") or "."
dofile(here .. "/fake_darktable.lua")
local api = dofile(arg[1])
local h = api._internal
local which = arg[2]
if which == "adapt" then
  -- HISTORY: "op,prio,enabled,name;..." (the image's history)
  local history = {}
  for op, prio, enabled, name in string.gmatch(os.getenv("HISTORY") or "", "([%w_]+),(%d+),(%d),([^;]*);?") do
    history[op] = history[op] or {}
    history[op][tonumber(prio)] = { enabled = enabled == "1", name = name }
  end
  io.write(h.adapt_iop_list(os.getenv("STYLE_XML"), history))
elseif which == "quote" then
  io.write(h.quote(os.getenv("ARG")))
elseif which == "safe" then
  io.write(h.safe(os.getenv("ARG")))
end
