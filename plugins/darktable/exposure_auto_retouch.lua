--[[
  exposure_auto_retouch.lua: automatic white-box retouching for darktable (4.2+, Lua API 9).

  A lighttable module "exposure auto-retouch" that, for the selected images:
    1. exports a small proxy (256 px JPEG) of the image as darktable currently renders it;
    2. asks exposure-engine for an edit sequence, as a darktable style:
         exposure-engine predict PROXY --format dtstyle --mode native|exact --style MODEL --start-daemon -o FILE
       or, with "apply a sequence file", converts a saved sequence offline:
         exposure-engine export SEQ.json --format dtstyle --mode native|exact -o FILE
    3. imports the style, applies it on top of the image's history and tags the image with the style name.

  native mode adds one editable module per step (exposure, rgblevels, rgbcurve, channelmixerrgb,
  colorbalancergb); exact mode adds one lut3d module and copies its .cube into darktable's 3D LUT root folder.

  Install:   exposure-engine plugins install darktable      (copies this file, adds `require` to luarc)
  Uninstall: exposure-engine plugins uninstall darktable
  Settings:  preferences > lua options (engine command, 3D LUT folder, keep imported styles).
  Docs:      docs/darktable.md of exposure-engine.
]]

local dt = require "darktable"

local MODULE = "exposure_auto_retouch"
local PROXY_SIZE = 256

if dt.configuration.api_version_major < 9 then
  dt.print_error(MODULE .. ": needs darktable 4.2 or newer (Lua API 9), this is " .. dt.configuration.api_version_string)
  return {}
end

local os_name = dt.configuration.running_os
local SEP = (os_name == "windows") and "\\" or "/"

-- ------------------------------------------------------------------------------------------------------------
-- Quoting and running commands the way darktable's lua-scripts (lib/dtutils/file.lua) do it

local function quote(s)
  if os_name == "windows" then
    return '"' .. s .. '"'  -- cmd.exe: no way to escape '"' inside; paths cannot contain it anyway
  end
  return "'" .. string.gsub(s, "'", "'\\''") .. "'"
end

local function shell(cmd)
  -- cmd.exe /c strips one pair of outer quotes when the line starts with one: add a pair to keep ours
  if os_name == "windows" then return '"' .. cmd .. '"' end
  return cmd
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

local function copy_file(src, dst)
  local data = read_file(src)
  if not data then return false, "cannot read " .. src end
  local f, err = io.open(dst, "wb")
  if not f then return false, err end
  f:write(data)
  f:close()
  return true
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function last_lines(text, n)
  local lines = {}
  for line in string.gmatch(text or "", "[^\r\n]+") do lines[#lines + 1] = line end
  local out = {}
  for i = math.max(1, #lines - n + 1), #lines do out[#out + 1] = lines[i] end
  return table.concat(out, " | ")
end

-- Run cmd, stdout+stderr to a log file; returns ok, log text.
local function run(cmd, log_path)
  local line = shell(cmd .. " > " .. quote(log_path) .. " 2>&1")
  dt.print_log(MODULE .. ": " .. line)
  local result = dt.control.execute(line)
  local log = read_file(log_path) or ""
  os.remove(log_path)
  return result == 0, log, result
end

-- ------------------------------------------------------------------------------------------------------------
-- Preferences (preferences > lua options)

-- The installer writes the engine's absolute path beside this file (desktop sessions rarely have its venv on PATH).
local function installed_engine()
  local data = read_file(dt.configuration.config_dir .. SEP .. "lua" .. SEP .. MODULE .. ".engine")
  local line = data and string.match(data, "^%s*(.-)%s*$")
  if line and line ~= "" then return line end
  return "exposure-engine"
end

dt.preferences.register(MODULE, "engine", "string", "exposure auto-retouch: engine command",
  "the exposure-engine command (full path if it is not on PATH, e.g. ~/.venv/bin/exposure-engine)",
  installed_engine())
dt.preferences.register(MODULE, "lut_folder", "string", "exposure auto-retouch: 3D LUT folder",
  "where exact mode copies its .cube files; must be darktable's 3D LUT root folder "
  .. "(preferences > processing). Empty: read it from darktablerc", "")
dt.preferences.register(MODULE, "keep_styles", "bool", "exposure auto-retouch: keep imported styles",
  "keep each per-image style in the styles list after applying it", false)

local function pref(name, kind)
  return dt.preferences.read(MODULE, name, kind)
end

-- darktable's own 3D LUT root folder, from darktablerc (the Lua API cannot read darktable's settings).
local function lut_folder()
  local p = pref("lut_folder", "string")
  if p and p ~= "" then return p end
  local rc = read_file(dt.configuration.config_dir .. SEP .. "darktablerc")
  if rc then
    local v = string.match(rc, "\nplugins/darkroom/lut3d/def_path=([^\r\n]*)")
    if v and v ~= "" then return v end
  end
  return nil
end

local function safe(s)
  return (string.gsub(s, "[^%w%._%-]", "_"))
end

-- ------------------------------------------------------------------------------------------------------------
-- The work

local function find_style(name)
  for i = 1, #dt.styles do
    if dt.styles[i].name == name then return dt.styles[i] end
  end
  return nil
end

-- ------------------------------------------------------------------------------------------------------------
-- Pipe order. The style puts its modules, in sequence order, just before "output color profile" through its
-- <iop_list>. Applying a style, darktable renumbers the new instances (src/common/iop_order.c,
-- dt_ioppr_update_for_entries): a module the image does not use yet reuses the unused base instance (0), further
-- ones get max+1, max+2... The exported list assumes every base instance is in use (instances 1..k), so before
-- importing we rewrite it for this image's history, with the same rule darktable applies.

local function parse_plugins(xml)
  local items = {}
  for block in string.gmatch(xml or "", "<plugin>(.-)</plugin>") do
    items[#items + 1] = {
      op = string.match(block, "<operation>(.-)</operation>"),
      prio = tonumber(string.match(block, "<multi_priority>(.-)</multi_priority>") or "0"),
      enabled = string.match(block, "<enabled>(.-)</enabled>") == "1",
      name = string.match(block, "<multi_name>(.-)</multi_name>") or "",
    }
  end
  return items
end

-- op -> { [prio] = {enabled=..., name=...} } for the image's current history (read through a temporary style:
-- the only way Lua API 9 exposes a history).
local function image_instances(image, tmp, stamp)
  local result = {}
  local tmpname = "exposure_history_" .. image.id .. "_" .. stamp
  local ok, style = pcall(dt.styles.create, image, tmpname, "temporary (exposure auto-retouch)")
  if not ok or not style then return result end  -- no history at all
  style:export(tmp, true)
  style:delete()
  local file = tmp .. SEP .. tmpname .. ".dtstyle"
  local xml = read_file(file)
  os.remove(file)
  for _, it in ipairs(parse_plugins(xml)) do
    result[it.op] = result[it.op] or {}
    result[it.op][it.prio] = { enabled = it.enabled, name = it.name }
  end
  return result
end

local function adapt_iop_list(xml, history)
  local list_text = string.match(xml, "<iop_list>(.-)</iop_list>")
  if not list_text then return xml end
  local list = {}
  for op, inst in string.gmatch(list_text, "([%w_]+),(%d+)") do list[#list + 1] = { op, tonumber(inst) } end

  local by_op = {}
  for _, it in ipairs(parse_plugins(xml)) do
    by_op[it.op] = by_op[it.op] or {}
    table.insert(by_op[it.op], it)
  end
  local mapping = {}  -- op -> { [style prio] = assigned prio }
  for op, items in pairs(by_op) do
    table.sort(items, function(a, b) return a.prio < b.prio end)
    local inst = history[op] or {}
    local prios, count, enabled, max_prio, name_exists = {}, 0, 0, 0, false
    inst[0] = inst[0] or { enabled = false, name = "" }  -- the base instance always exists
    for prio, info in pairs(inst) do
      prios[#prios + 1] = prio
      count = count + 1
      if info.enabled then enabled = enabled + 1 end
      if prio > max_prio then max_prio = prio end
      if info.name == items[1].name then name_exists = true end
    end
    table.sort(prios)
    local force_append = items[1].name ~= "" and not name_exists
    local nb_replace = force_append and (count - enabled) or count
    mapping[op] = {}
    for n, it in ipairs(items) do
      mapping[op][it.prio] = (n <= nb_replace) and prios[n] or (max_prio + n - nb_replace)
    end
  end

  -- our entries are the ones after colorreconstruct (just before colorout)
  local first_ours = nil
  for i, e in ipairs(list) do
    if e[1] == "colorreconstruct" then first_ours = i + 1 end
  end
  if not first_ours then return xml end
  local taken = {}
  for i = first_ours, #list do
    local e = list[i]
    if e[1] == "colorout" then break end
    local m = mapping[e[1]]
    if m and m[e[2]] then
      e[2] = m[e[2]]
      taken[e[1] .. "," .. e[2]] = i
    end
  end
  local out = {}
  for i, e in ipairs(list) do
    local key = e[1] .. "," .. e[2]
    if not taken[key] or taken[key] == i then out[#out + 1] = key end
  end
  local new_text = table.concat(out, ",")
  return (string.gsub(xml, "<iop_list>.-</iop_list>", function() return "<iop_list>" .. new_text .. "</iop_list>" end))
end

-- Import the .dtstyle at path (named name) and apply it to image; returns ok, message.
local function apply_style_file(image, path, name, mode, cube_path)
  if mode == "exact" then
    local folder = lut_folder()
    if not folder then
      return false, "exact mode needs darktable's 3D LUT root folder: set it in preferences > processing "
        .. "(or this module's LUT folder in preferences > lua options)"
    end
    local ok, err = copy_file(cube_path, folder .. SEP .. safe(name) .. ".cube")
    os.remove(cube_path)
    if not ok then return false, "cannot copy the LUT into " .. folder .. ": " .. tostring(err) end
  end
  local xml = read_file(path)
  if not xml then return false, "the engine wrote no style at " .. path end
  local tmp = dt.configuration.tmp_dir
  local stamp = tostring(os.time()) .. "_" .. tostring(math.random(100000, 999999))
  xml = adapt_iop_list(xml, image_instances(image, tmp, stamp))
  local f = io.open(path, "wb")
  if not f then return false, "cannot write " .. path end
  f:write(xml)
  f:close()
  local old = find_style(name)
  if old then old:delete() end  -- import refuses an existing name
  dt.styles.import(path)
  os.remove(path)
  local style = find_style(name)
  if not style then return false, "darktable could not import the style " .. path end
  style:apply(image)
  local tag = dt.tags.create("exposure-engine|" .. name)
  dt.tags.attach(tag, image)
  if not pref("keep_styles", "bool") then style:delete() end
  return true, name
end

local function engine_failed(ok, log, code)
  if code == 127 or code == 9009 or string.find(log, "not found", 1, true)
      or string.find(log, "not recognized", 1, true) then
    return "exposure-engine not found (" .. pref("engine", "string")
      .. "): install it (pip install exposure-engine) or set its path in preferences > lua options"
  end
  return "exposure-engine failed: " .. last_lines(log, 2)
end

-- For one image: build the engine command (predict on a proxy, or export of a sequence file), run it,
-- apply the style. Returns ok, message.
local function process(image, mode, model, sequence_file)
  local tmp = dt.configuration.tmp_dir
  local stamp = tostring(os.time()) .. "_" .. tostring(math.random(100000, 999999))
  local name
  if sequence_file then
    local stem = string.match(sequence_file, "([^/\\]+)$") or "sequence"
    stem = string.gsub(stem, "%.[jJ][sS][oO][nN]$", "")
    name = safe("exposure_" .. stem .. "_" .. mode .. "_" .. image.id)
  else
    name = safe("exposure_" .. (model ~= "" and model or "default") .. "_" .. mode .. "_" .. image.id)
  end
  local style_path = tmp .. SEP .. name .. "_" .. stamp .. ".dtstyle"
  local cube_path = tmp .. SEP .. name .. ".cube"  -- written beside the style, named after --name
  local log_path = tmp .. SEP .. name .. "_" .. stamp .. ".log"
  local engine = pref("engine", "string")
  if engine == nil or engine == "" then engine = "exposure-engine" end
  local kind = image.is_raw and "raw" or "raster"
  local common = " --format dtstyle --mode " .. mode .. " --name " .. quote(name) .. " --input-kind " .. kind
    .. " -o " .. quote(style_path)

  local cmd, proxy
  if sequence_file then
    cmd = quote(engine) .. " export " .. quote(sequence_file) .. common
  else
    proxy = tmp .. SEP .. name .. "_" .. stamp .. "_proxy.jpg"
    local fmt = dt.new_format("jpeg")
    fmt.max_width = PROXY_SIZE
    fmt.max_height = PROXY_SIZE
    fmt.quality = 95
    if fmt:write_image(image, proxy) then  -- true means failure
      return false, "could not export a proxy of " .. image.filename
    end
    cmd = quote(engine) .. " predict " .. quote(proxy) .. common .. " --start-daemon"
    if model ~= "" then cmd = cmd .. " --style " .. quote(model) end
  end

  local ok, log, code = run(cmd, log_path)
  if proxy then os.remove(proxy) end
  if not ok or not exists(style_path) then
    return false, engine_failed(ok, log, code)
  end
  return apply_style_file(image, style_path, name, mode, cube_path)
end

local function run_on_images(images, mode, model, sequence_file)
  if #images == 0 then
    dt.print("exposure auto-retouch: select images first")
    return 0, 0
  end
  local done, failed, errors = 0, 0, {}
  for i, image in ipairs(images) do
    dt.print("exposure auto-retouch: " .. image.filename .. " (" .. i .. "/" .. #images .. ")")
    -- one image's failure (or a Lua error) must not stop the others
    local called, ok, msg = pcall(process, image, mode, model, sequence_file)
    if called and ok then
      done = done + 1
    else
      failed = failed + 1
      msg = image.filename .. ": " .. tostring(called and msg or ok)
      errors[#errors + 1] = msg
      dt.print_error(MODULE .. ": " .. msg)
      dt.print("exposure auto-retouch: " .. msg)
    end
  end
  if failed == 0 then
    dt.print("exposure auto-retouch: applied to " .. done .. " image(s)")
  end
  return done, failed, errors
end

-- ------------------------------------------------------------------------------------------------------------
-- The lighttable module

local mode_combo = dt.new_widget("combobox") {
  label = "mode",
  tooltip = "native: one editable darktable module per step (close to the engine)\n"
    .. "exact: one 3D LUT module (identical to the engine; needs a 3D LUT root folder)",
  selected = 1,
  "native", "exact",
}

local model_entry = dt.new_widget("entry") {
  text = "",
  placeholder = "default",
  tooltip = "style: the name of the exposure-engine model (empty: the default model)",
  editable = true,
}

local sequence_chooser = dt.new_widget("file_chooser_button") {
  title = "edit sequence (.json)",
  is_directory = false,
  tooltip = "a saved exposure-engine edit sequence to apply",
}

local function current_mode()
  return mode_combo.value == "exact" and "exact" or "native"
end

local auto_button = dt.new_widget("button") {
  label = "auto-retouch selected",
  tooltip = "predict an edit for each selected image and apply it as a style",
  clicked_callback = function()
    run_on_images(dt.gui.action_images, current_mode(), model_entry.text or "", nil)
  end,
}

local sequence_button = dt.new_widget("button") {
  label = "apply sequence file",
  tooltip = "apply the chosen edit-sequence file to each selected image",
  clicked_callback = function()
    local f = sequence_chooser.value
    if f == nil or f == "" then
      dt.print("exposure auto-retouch: choose an edit-sequence file first")
      return
    end
    run_on_images(dt.gui.action_images, current_mode(), "", f)
  end,
}

dt.register_lib(MODULE, "exposure auto-retouch", true, false,
  { [dt.gui.views.lighttable] = { "DT_UI_CONTAINER_PANEL_RIGHT_CENTER", 100 } },
  dt.new_widget("box") {
    orientation = "vertical",
    mode_combo,
    model_entry,
    auto_button,
    dt.new_widget("section_label") { label = "saved sequence" },
    sequence_chooser,
    sequence_button,
  })

dt.register_event(MODULE, "shortcut", function()
  run_on_images(dt.gui.action_images, current_mode(), model_entry.text or "", nil)
end, "exposure auto-retouch the selected images")

-- For scripts and tests: the same actions without the GUI.
local api = {
  apply_sequence_file = function(images, sequence_file, mode)
    return run_on_images(images, mode or "native", "", sequence_file)
  end,
  auto_retouch = function(images, mode, model)
    return run_on_images(images, mode or "native", model or "", nil)
  end,
  widgets = { mode = mode_combo, model = model_entry, sequence = sequence_chooser },
  -- pure helpers, exposed for tests/test_darktable_lua.py
  _internal = { adapt_iop_list = adapt_iop_list, parse_plugins = parse_plugins, quote = quote, safe = safe },
}
package.loaded[MODULE] = api
return api
