<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology|Labeling">
  <renderer-v2 type="singleSymbol" forceraster="0" symbollevels="0" enableorderby="0">
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option type="QString" name="color" value="255,0,255,0"/>
            <Option type="QString" name="style" value="no"/>
            <Option type="QString" name="outline_color" value="255,0,255,255"/>
            <Option type="QString" name="outline_style" value="solid"/>
            <Option type="QString" name="outline_width" value="0.6"/>
            <Option type="QString" name="outline_width_unit" value="MM"/>
            <Option type="QString" name="joinstyle" value="miter"/>
          </Option>
          <prop k="color" v="255,0,255,0"/>
          <prop k="style" v="no"/>
          <prop k="outline_color" v="255,0,255,255"/>
          <prop k="outline_style" v="solid"/>
          <prop k="outline_width" v="0.6"/>
          <prop k="outline_width_unit" v="MM"/>
          <prop k="joinstyle" v="miter"/>
        </layer>
      </symbol>
    </symbols>
    <rotation/>
    <sizescale/>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName="LABEL_EXPRESSION" isExpression="1" fontSize="8" fontSizeUnit="Point" textColor="255,255,255,255" textOpacity="1" fontWeight="75" fontFamily="Sans Serif" namedStyle="Bold" multilineHeight="1" previewBkgrdColor="0,0,0,255">
        <text-buffer bufferDraw="1" bufferSize="0.8" bufferSizeUnits="MM" bufferColor="0,0,0,255" bufferOpacity="0.8" bufferJoinStyle="128"/>
      </text-style>
      <text-format wrapChar="" plussign="0" decimals="3" formatNumbers="0" multilineAlign="3" leftDirectionSymbol="&lt;" rightDirectionSymbol="&gt;" addDirectionSymbol="0" reverseDirectionSymbol="0" placeDirectionSymbol="0"/>
      <placement placement="1" dist="0" offsetType="0" quadOffset="4" priority="5" centroidInside="1" centroidWhole="0" fitInPolygonOnly="0" overrunDistance="0"/>
      <rendering scaleVisibility="0" obstacle="1" displayAll="0" upsidedownLabels="0" labelPerPart="0" mergeLines="0" minFeatureSize="0" limitNumLabels="0" maxNumLabels="2000" fontLimitPixelSize="0" drawLabels="1"/>
    </settings>
  </labeling>
  <layerGeometryType>2</layerGeometryType>
</qgis>
