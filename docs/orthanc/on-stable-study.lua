-- Orthanc -> mwl-bridge: when a study is stable (no new instance for Orthanc's
-- "StableAge" seconds), tell the bridge, which completes the worklist items of
-- that study (or flags a conflict) and sends the RIS its CM. See docs/completion.md.
--
-- Install: add this file to Orthanc's "LuaScripts", and give Orthanc's service
-- two environment variables:
--   MWL_BRIDGE_URL    the bridge's console, e.g. https://mwl.example.org:8080
--   MWL_BRIDGE_TOKEN  an API token of role operator (mwl-bridge admin new-token)
-- The bridge answers 200 with the step ids it completed, kept and flagged.

local url = os.getenv('MWL_BRIDGE_URL') or 'http://127.0.0.1:8080'
local token = os.getenv('MWL_BRIDGE_TOKEN') or ''

function OnStableStudy(studyId, tags, metadata)
  local study = ParseJson(RestApiGet('/studies/' .. studyId))
  local stats = ParseJson(RestApiGet('/studies/' .. studyId .. '/statistics'))
  local main = study['MainDicomTags'] or {}
  local patient = study['PatientMainDicomTags'] or {}
  local body = {
    study_instance_uid = main['StudyInstanceUID'] or '',
    accession_number = main['AccessionNumber'] or '',
    patient_id = patient['PatientID'] or '',
    series = tonumber(stats['CountSeries']) or -1,
    instances = tonumber(stats['CountInstances']) or -1,
    pacs = 'orthanc'
  }
  local headers = {
    ['Authorization'] = 'Bearer ' .. token,
    ['Content-Type'] = 'application/json'
  }
  -- Orthanc logs the HTTP error itself; the study's Orthanc ID is not patient data.
  local answer = HttpPost(url .. '/api/reconcile/study', DumpJson(body, true), headers)
  if answer == nil then
    print('mwl-bridge: the stable-study push failed for study ' .. studyId)
  end
end
