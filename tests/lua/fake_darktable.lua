-- A stand-in for darktable's Lua module, enough to load plugins/darktable/exposure_auto_retouch.lua outside
-- darktable and test its pure helpers (tests/test_darktable_lua.py). Every API call is accepted and recorded.
local calls = {}
local function recorder(name)
  return setmetatable({}, {
    __index = function(_, k) return recorder(name .. "." .. k) end,
    __call = function(_, ...) calls[#calls + 1] = name return setmetatable({}, { __call = function(_, t) return t end }) end,
  })
end
local dt = recorder("dt")
rawset(dt, "configuration", { api_version_major = 9, api_version_string = "9.0.0",
  running_os = os.getenv("FAKE_OS") or "linux", tmp_dir = "/tmp", config_dir = "/nonexistent" })
rawset(dt, "preferences", { register = function() end, read = function() return "" end })
rawset(dt, "gui", { views = { lighttable = "lighttable" }, action_images = {} })
rawset(dt, "new_widget", function(kind) return function(t) t.kind = kind return t end end)
rawset(dt, "register_lib", function() end)
rawset(dt, "register_event", function() end)
rawset(dt, "_calls", calls)
package.loaded["darktable"] = dt
return dt
