--[[ Test driver for the darktable plug-in, run by darktable's GUI (under Xvfb) through --luacmd after luarc has
  loaded the installed plug-in exactly as a user's darktable does.

  EXPOSURE_TEST_JOBS names a file of jobs, one a line, fields separated by "|":
      ACTION|IMAGE|MODE|SEQUENCE|OUTDIR
  ACTION: "sequence" (the module's "apply sequence file" with SEQUENCE), "predict" (its "auto-retouch") or
  "missing_engine" (apply SEQUENCE with the engine command pointing nowhere);
  MODE: native | exact. For each job the photo is imported, the plug-in's action runs, and OUTDIR receives:
  before.tif (16-bit export before the plug-in ran), history.dtstyle (the image's history afterwards),
  render.tif (16-bit export afterwards), errors.txt (the messages the plug-in showed), tags.txt and result.txt
  ("ok DONE FAILED" or "error MESSAGE"). darktable quits at the end whatever happens. ]]
local dt = require "darktable"

local function write(dir, name, text)
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(text)
  f:close()
end

local function run_job(action, image_path, mode, sequence, out)
  local plugin = package.loaded["exposure_auto_retouch"]
  if type(plugin) ~= "table" or not plugin.apply_sequence_file then
    error("the plug-in was not loaded by luarc")
  end
  local img = dt.database.import(image_path)
  if not img then error("import failed: " .. image_path) end
  local fmt = dt.new_format("tiff")
  fmt.bpp = 16
  fmt:write_image(img, out .. "/before.tif")  -- darktable's rendering before the plug-in: the sequence's input
  local done, failed, errors
  if action == "predict" then
    done, failed, errors = plugin.auto_retouch({ img }, mode, "")
  elseif action == "missing_engine" then  -- the engine command points nowhere: the user must be told
    local saved = dt.preferences.read("exposure_auto_retouch", "engine", "string")
    dt.preferences.write("exposure_auto_retouch", "engine", "string", "/nonexistent/exposure-engine")
    done, failed, errors = plugin.apply_sequence_file({ img }, sequence, mode)
    dt.preferences.write("exposure_auto_retouch", "engine", "string", saved)
  else
    done, failed, errors = plugin.apply_sequence_file({ img }, sequence, mode)
  end
  write(out, "errors.txt", table.concat(errors or {}, "\n"))
  local tags = {}
  for _, t in ipairs(dt.tags.get_tags(img)) do tags[#tags + 1] = t.name end
  write(out, "tags.txt", table.concat(tags, "\n"))
  local style = dt.styles.create(img, "history", "history after the plug-in")
  if style then
    style:export(out, true)
    style:delete()
  end
  fmt:write_image(img, out .. "/render.tif")
  write(out, "result.txt", "ok " .. tostring(done) .. " " .. tostring(failed))
end

-- --luacmd runs while darktable's GUI may still be starting up; working at once deadlocked about one run in
-- three on a fresh config folder (measured on 4.2.1 under Xvfb). Give it a moment.
dt.control.sleep(3000)

local jobs = io.open(os.getenv("EXPOSURE_TEST_JOBS"), "r")
for line in jobs:lines() do
  local action, image_path, mode, sequence, out = string.match(line, "^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$")
  if action then
    local ok, err = pcall(run_job, action, image_path, mode, sequence, out)
    if not ok then write(out, "result.txt", "error " .. tostring(err)) end
  end
end
jobs:close()
dt.gui.action("global/quit", 0, "", "", 1.0)
